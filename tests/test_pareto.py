"""Tuning for speed and size: the measures, the rules that pick a trial, the Pareto front and
its bounds, and a two-worker search of several objectives through tune.py."""

from __future__ import annotations

import re
import subprocess
import sys

import mlflow
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from common import errors
from conftest import REPO, run_stage, set_tune
from ml import config, footprint, model, tune_params
from tracking import store
from tune_workers import mlflow_runs, start_tune, study_in
from tuning import coordination, front, summary
from tuning.pick import Pick

# --- the measures ---


def tiny_cnn():
    return model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=4)], dense=[16]))


def test_latency_is_the_median_of_the_timed_calls_in_milliseconds_after_the_warmup():
    calls = iter([0.0, 0.001, 1.0, 1.005, 2.0, 2.002, 3.0, 3.1, 4.0, 4.003])  # start, end, ...
    image = np.zeros((28, 28, 1), np.uint8)
    timed = footprint.latency_ms(tiny_cnn(), image, clock=lambda: next(calls), warmup=2, repeats=5)
    assert timed == pytest.approx(3.0)  # of 1, 5, 2, 100 and 3 ms; the warm-up is not timed
    assert next(calls, None) is None  # two clock reads per timed call, none for the warm-up


def test_a_footprint_counts_the_weights_and_the_saved_archive():
    cnn = tiny_cnn()
    measured = footprint.measure(
        cnn, np.zeros((28, 28, 1), np.uint8), clock=iter(range(999)).__next__
    )
    assert measured.latency_ms == 1000.0  # one tick of the fake clock per call
    assert measured.params == cnn.count_params()
    assert 10 < measured.size_kb < 1000


# --- the rules and the front, on a study made by hand ---


def hand_made_study(rows: list[tuple[float, float, float, float]]) -> optuna.Study:
    """Trials of (val_accuracy, latency_ms, size_kb, latency excess over its bound)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, latency, size, excess in rows:
        measures = {"val_accuracy": accuracy, "latency_ms": latency, "params": 1, "size_kb": size}
        study.add_trial(
            optuna.trial.create_trial(
                values=[accuracy, latency],
                user_attrs={front.MEASURES_ATTR: measures},
                constraints={"latency_ms": excess},
            )
        )
    return study


STUDY = [  # trial: accuracy, latency, size, excess
    (0.9920, 1.9, 900.0, -0.1),  # 0: the most accurate
    (0.9915, 1.2, 400.0, -0.8),  # 1: 0.05 pp below 0, faster and smaller
    (0.9911, 0.9, 300.0, -1.1),  # 2: 0.09 pp below, faster still
    (0.9900, 0.5, 100.0, 0.2),  # 3: the fastest and smallest, but outside the bound
    (0.9890, 1.5, 950.0, -0.5),  # 4: beaten by 1 on both objectives
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("accuracy", 0), ("fastest:0.05", 1), ("fastest:0.1", 2), ("smallest:0.06", 1)],
)
def test_a_rule_picks_among_the_feasible_trials_within_its_tolerance(rule, expected):
    study = hand_made_study(STUDY)
    assert front.picked(front.candidates(study), Pick.parse(rule)).number == expected


def test_a_trial_outside_the_bounds_is_never_picked_nor_on_the_front():
    study = hand_made_study(STUDY)
    assert front.picked(front.candidates(study), Pick.parse("fastest:100")).number == 2
    assert [trial.number for trial in front.pareto_front(study)] == [0, 1, 2]  # not 3, nor 4
    table = front.table(study).set_index("trial")
    assert list(table["pareto"]) == [True, True, True, False, False]
    assert not table.loc[3, "feasible"] and table.loc[4, "feasible"]


def test_a_study_with_no_trial_inside_its_bounds_says_so_and_what_to_do():
    study = hand_made_study([(0.99, 1.0, 10, 0.5), (0.98, 1.0, 10, 0.1)])
    study.set_user_attr(coordination.GOAL_ATTR, {"constraints": {"latency_ms": {"max": 0.5}}})
    refused = "none of the 2 complete trials of study .* {'latency_ms': {'max': 0.5}}: search on"
    with pytest.raises(errors.PipelineError, match=refused):
        summary.best_of(study, Pick.parse("fastest:0.1"))


def test_ties_go_to_the_more_accurate_then_the_earlier_trial():
    study = hand_made_study(
        [(0.99, 1.0, 10, -1), (0.991, 1.0, 10, -1), (0.991, 1.0, 10, -1), (0.992, 2.0, 10, -1)]
    )
    assert front.picked(front.candidates(study), Pick.parse("fastest:1")).number == 1


def test_a_tolerance_edge_survives_float_rounding():
    """0.9926 - 0.9916 is 0.0009999..., not 0.001: a trial 0.1 pp below is within 0.1 pp."""
    study = hand_made_study([(0.9926, 2.0, 10, -1), (0.9916, 1.0, 10, -1)])
    assert front.picked(front.candidates(study), Pick.parse("fastest:0.1")).number == 1


@pytest.mark.parametrize(
    "text", ["fastest", "fastest:x", "slowest:0.1", "fastest:-1", "accuracy:1"]
)
def test_a_rule_that_is_no_rule_names_the_rules(text):
    with pytest.raises(ValueError, match="accuracy, fastest:TOL or smallest:TOL"):
        Pick.parse(text)


def test_the_front_figure_plots_accuracy_against_the_second_objective(tmp_path):
    figure = front.figure(hand_made_study(STUDY), ["val_accuracy", "latency_ms"])
    axes = figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("val_accuracy", "latency_ms")
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert "Infeasible Trial" in legend and "Best Trial" in legend  # trial 3 apart, the front red
    figure.savefig(tmp_path / "front.png")
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert front.figure(hand_made_study(STUDY), ["val_accuracy"]) is None


# --- the objectives and bounds params.yaml names ---


def tune_with(**values) -> tune_params.TuneParams:
    return config.load().tune.model_copy(update=values)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"objectives": ["latency_ms"]}, "the first must be val_accuracy"),
        ({"objectives": ["val_accuracy", "speed"]}, "'latency_ms', 'params'"),
        ({"objectives": ["val_accuracy", "params", "params"]}, "each measure once"),
        ({"constraints": {"latency_ms": {}}}, "give min, max or both"),
        ({"constraints": {"size_kb": {"min": 9, "max": 1}}}, "min must be below max"),
    ],
)
def test_bad_objectives_and_bounds_are_refused_with_the_fix(values, expected):
    tune = config.load().tune.model_dump(mode="json") | values
    with pytest.raises(ValueError, match=expected):
        tune_params.TuneParams.model_validate(tune)


def test_a_bound_gives_optunas_constraint_value():
    bound = tune_params.Bound(min=1.0, max=2.0)
    assert [bound.excess(value) for value in (0.5, 1.5, 2.5)] == [0.5, -0.5, 0.5]
    assert tune_params.Bound(max=2.0).excess(1.0) == -1.0


def test_a_worker_with_other_objectives_or_bounds_is_refused_by_the_study(tmp_path):
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies.db'}")
    several = tune_with(objectives=["val_accuracy", "latency_ms"])
    study, created = coordination.open_study("mo", rdb, several, existing=False)
    assert created and study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    assert isinstance(study.pruner, optuna.pruners.NopPruner)  # Optuna prunes one objective only
    coordination.keep_goal(study, several)
    coordination.keep_goal(study, several)  # the same goal: joins
    with pytest.raises(errors.PipelineError, match=re.escape("-S 'tune.objectives=...'")):
        coordination.keep_goal(study, tune_with())
    bounded = several.model_copy(update={"constraints": {"params": tune_params.Bound(max=9)}})
    with pytest.raises(errors.PipelineError, match=re.escape("tune.constraints {}")):
        coordination.keep_goal(study, bounded)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--pick", "fastest:0.1"], "--pick chooses the trial for --apply or --register"),
        (["--apply", "--pick", "quickest"], "accuracy, fastest:TOL or smallest:TOL"),
        (["-S", "tune.objectives=[latency_ms]"], "the first must be val_accuracy"),
        (["-S", "tune.constraints={latency_ms: {}}"], "give min, max or both"),
    ],
)
def test_bad_objectives_and_picks_are_one_line_before_anything_loads(args, expected):
    result = subprocess.run(
        [sys.executable, "src/tune.py", *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode in (1, 2), result.stderr  # 2: argparse's usage errors
    assert expected in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr


# --- a search of several objectives, end to end ---


def test_two_workers_search_a_bounded_front_and_register_the_smallest_trial(tune_project):
    """Two tune.py workers share a study of accuracy against latency, bounded in weights; every
    trial is measured and logged with the machine's system metrics; the front is tagged and
    plotted; --register --pick takes the smallest trial and tags its version with its costs."""
    set_tune(
        tune_project,
        objectives=["val_accuracy", "latency_ms"],
        constraints={"params": {"max": 42_000}},  # the largest of TINY_SPACE have 42,346
    )
    sampled = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"}  # trials on tiny data are short
    workers = [start_tune(tune_project, "--n-trials", "3", env=sampled) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()[-3000:]
    study = study_in(tune_project)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.number for t in trials) == list(range(6)) == [t.number for t in study.trials]
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # none drawn twice
    for trial in trials:
        measures = front.measures(trial)
        assert set(measures) == {"val_accuracy", "latency_ms", "params", "size_kb"}
        assert trial.values == [measures["val_accuracy"], measures["latency_ms"]]
        assert trial.constraints == {"params": measures["params"] - 42_000}
    runs = mlflow_runs()
    children = {r.data.tags["optuna_trial"]: r for r in runs if "optuna_trial" in r.data.tags}
    on_front = {str(trial.number) for trial in study.best_trials}
    assert on_front and {n for n, r in children.items() if r.data.tags["pareto"] == "true"} == (
        on_front
    )
    for number, child in children.items():
        assert {"latency_ms", "params", "size_kb", "train_seconds"} <= set(child.data.metrics)
        assert any(key.startswith("system/") for key in child.data.metrics), number
    (parent,) = [r for r in runs if "optuna_study" in r.data.tags]
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert "plots/pareto_front.png" in logged
    assert "plots/intermediate_values.png" not in logged  # no epochs reported: it would be blank

    registered = run_stage(tune_project, "tune", args=["--register", "--pick", "smallest:100"])
    assert registered.returncode == 0, registered.stderr[-3000:]
    feasible = [t for t in trials if front.feasible(t)]
    smallest = min(feasible, key=lambda t: (front.measures(t)["size_kb"], -t.values[0], t.number))
    version = mlflow.MlflowClient(store.tracking_uri()).get_model_version_by_alias(
        "mnist-cnn", "challenger"
    )
    assert version.tags["trial"] == str(smallest.number)
    assert version.tags["pick"] == "smallest:100"
    assert int(version.tags["params"]) == front.measures(smallest)["params"]
    assert float(version.tags["latency_ms"]) > 0 and float(version.tags["size_kb"]) > 0


def test_a_search_of_several_objectives_says_it_is_not_pruned_and_prints_its_front(tune_project):
    several = ["-S", "tune.objectives=[val_accuracy,size_kb]", "--n-trials", "2"]
    result = run_stage(tune_project, "tune", args=several)
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout
    assert said.count("no pruning") == 1, said
    assert re.search(r"trial \d: val_accuracy 0\.\d{4}, size_kb [\d,]+", said), said
    assert "--apply --pick fastest:" in said or "--apply --pick smallest:" in said, said
    assert result.stderr == ""
