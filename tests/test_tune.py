"""tune: Optuna studies on tiny data, a real SQLite storage and a real MLflow store."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from filelock import FileLock

import config
import data
import registry
import studies
import tracking
import tune
from conftest import REPO, run_stage
from mnist_fakes import synthetic_digits

TINY_SPACE = {
    "train.model.blocks.0.filters": {"low": 4, "high": 8},
    "train.model.dense.0": {"choices": [16, 32]},
    "train.learning_rate": {"low": 0.001, "high": 0.01, "log": True},
    "train.augment.shift": {"low": 0.0, "high": 0.1},
    "train.epochs": {"low": 1, "high": 2},
}


@pytest.fixture
def tune_project(project: Path, mirror) -> Path:
    """The scratch project with tiny processed data and a tiny search space."""
    (project / "data").mkdir()
    (project / "data" / "raw").symlink_to(mirror[0])
    assert run_stage(project, "preprocess").returncode == 0
    # A grace period no live worker's heartbeat can miss, however busy the machine; the test
    # that kills a worker shortens it only once no live worker is left. No pruner: which trials
    # it stops depends on how parallel workers interleave.
    set_tune(project, space=TINY_SPACE, heartbeat_s=1, grace_s=600, pruner="none")
    return project


def set_tune(project: Path, **values: object) -> None:
    """Replace (not merge) keys of the `tune` section of the project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["tune"].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def study_in(project: Path, name: str = "mnist-cnn") -> optuna.Study:
    """The project's study, opened under the lock its workers hold while creating the tables."""
    with FileLock(project / studies.STUDIES_LOCK.relative_to(config.ROOT)):
        return optuna.load_study(study_name=name, storage=f"sqlite:///{project}/optuna/studies.db")


def mlflow_runs() -> list[mlflow.entities.Run]:
    mlflow.set_tracking_uri(tracking.tracking_uri())
    return mlflow.search_runs(experiment_names=["mnist-cnn"], output_format="list")


def test_a_three_trial_study_gives_three_child_runs_under_one_parent(tune_project):
    result = run_stage(tune_project, "tune", args=["--n-trials", "3"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state.name for t in study_in(tune_project).trials] == ["COMPLETE"] * 3
    runs = mlflow_runs()
    (parent,) = [r for r in runs if "optuna_study" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.data.tags["optuna_trial"] for c in children) == ["0", "1", "2"]
    assert all(c.data.tags["trial_state"] == "COMPLETE" for c in children)
    assert set(children[0].data.params) == set(TINY_SPACE)
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in logged and "plots/intermediate_values.png" in logged
    best = yaml.safe_load((tune_project / "reports" / "tune" / "best_params.yaml").read_text())
    assert best["value"] == study_in(tune_project).best_value
    assert "rerun with --apply" in result.stdout


def test_a_trial_the_pruner_stops_is_pruned_in_optuna_and_mlflow():
    images, labels = synthetic_digits(120, seed=2)
    x = images[..., np.newaxis]
    splits = data.Splits(data.Split(x[:100], labels[:100]), data.Split(x[100:], labels[100:]))
    parent = tracking.study_run("mnist-cnn", "pruning", "memory")
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01)
    )  # always
    objective = tune.Objective(splits, {"scale": 1 / 255, "offset": 0.0}, parent)
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    (child,) = [r for r in mlflow_runs() if r.data.tags.get("mlflow.parentRunId") == parent]
    assert child.data.tags["trial_state"] == "PRUNED" and child.info.status == "KILLED"


def test_no_pruner_stops_a_trial_after_the_last_prune_epoch():
    """A pruner that would stop every trial stops it only up to the last prune epoch."""
    always = optuna.pruners.ThresholdPruner(lower=1.01)
    study = optuna.create_study(pruner=tune.EarlyOnly(always, tune.LAST_PRUNE_EPOCH))
    trial = study.ask()
    decisions = []
    for step in range(1, tune.LAST_PRUNE_EPOCH + 3):
        trial.report(0.5, step)
        decisions.append(trial.should_prune())
    assert decisions == [True] * tune.LAST_PRUNE_EPOCH + [False, False]
    built = [tune.pruner(name) for name in config.PRUNERS]
    assert built and all(isinstance(p, tune.EarlyOnly) for p in built)


def test_the_quartile_pruner_keeps_only_trials_in_the_top_quarter_of_complete_ones():
    """The bar is the complete trials at the same epoch; pruned ones never lower it."""
    study = optuna.create_study(direction="maximize", pruner=tune.pruner("quartile"))
    for curve in ([0.90, 0.95], [0.92, 0.96], [0.94, 0.97], [0.96, 0.98]):
        trial = study.ask()
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    for _ in range(4):  # counted, these would lower the epoch-1 bar to 0.925
        trial = study.ask()
        trial.report(0.10, 1)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    def pruned_at(curve: list[float]) -> int | None:
        trial = study.ask()
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return step
        study.tell(trial, curve[-1])
        return None

    # Top quarter of the four complete trials: above 0.945 at epoch 1, 0.9725 at epoch 2.
    assert pruned_at([0.93, 0.99]) == 1  # at the median, below the top quarter
    assert pruned_at([0.95, 0.97]) == 2
    assert pruned_at([0.95, 0.975]) is None


def test_trials_report_each_epoch_at_the_epochs_trained():
    images, labels = synthetic_digits(120, seed=3)
    x = images[..., np.newaxis]
    splits = data.Splits(data.Split(x[:100], labels[:100]), data.Split(x[100:], labels[100:]))
    parent = tracking.study_run("mnist-cnn", "steps", "memory")
    objective = tune.Objective(splits, {"scale": 1 / 255, "offset": 0.0}, parent)
    tiny = "{train.epochs: {choices: [4]}, train.model.dense.0: {choices: [16]}}"
    objective.space = config.load(overrides=[f"tune.space={tiny}"]).tune.space
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3, 4]


def test_two_workers_share_one_study_without_duplicate_or_lost_trials(tune_project):
    workers = [start_tune(tune_project, "--n-trials", "2") for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()[-3000:]
    numbers = sorted(t.number for t in study_in(tune_project).trials)
    assert numbers == [0, 1, 2, 3]
    assert {t.state.name for t in study_in(tune_project).trials} == {"COMPLETE"}


def test_a_killed_workers_trial_fails_and_is_retried_once(tune_project):
    long_trials = TINY_SPACE | {"train.epochs": {"low": 40, "high": 41}}  # killed mid-trial
    set_tune(tune_project, space=long_trials)
    worker = start_tune(tune_project, "--n-trials", "1", stdout=subprocess.PIPE)
    wait_for_first_epoch(worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    # The next worker checks for stale trials when it starts one. Its own start-up (imports,
    # data) outlasts a 1 s grace period, so the killed trial is stale by then; no live worker
    # is left to be misjudged.
    set_tune(tune_project, space=TINY_SPACE, grace_s=1)
    result = run_stage(tune_project, "tune", args=["--n-trials", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study_in(tune_project).trials
    assert trials[0].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert "RUNNING" not in {t.state.name for t in trials}
    (killed,) = [r for r in mlflow_runs() if r.data.tags.get("optuna_trial") == "0"]
    assert killed.info.status == "FAILED" and killed.data.tags["trial_state"] == "FAIL"


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_retried(tmp_path):
    tune_params = config.load().tune.model_copy(update={"grace_s": 10})
    rdb = studies.storage(f"sqlite:///{tmp_path}/studies.db", tune_params)
    study = optuna.create_study(study_name="orphans", storage=rdb, direction="maximize")
    study.ask()  # RUNNING, never signed in: its worker died before the trial began
    studies.sign_in(rdb, study.ask())  # RUNNING and alive: Optuna's heartbeats watch this one
    now = datetime.datetime.now()
    assert studies.fail_orphans(rdb, study, now) == []  # within the grace period: may be starting
    later = now + datetime.timedelta(seconds=11)
    assert studies.fail_orphans(rdb, study, later) == [0]
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING", "WAITING"]
    assert study.trials[2].system_attrs["failed_trial"] == 0  # the retry, queued once
    assert studies.fail_orphans(rdb, study, later) == []


def test_register_retrains_the_winner_and_registers_it_as_challenger(tune_project):
    result = run_stage(tune_project, "tune", args=["--n-trials", "1", "--register"])
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(tracking.tracking_uri())
    version = client.get_model_version_by_alias("mnist-cnn", "challenger")
    assert version.tags["source"] == "tune" and version.tags["trial"] == "0"
    trial_value = study_in(tune_project).best_value
    assert float(version.tags["val_accuracy"]) == trial_value  # deterministic retraining on CPU
    assert "champion" not in client.get_registered_model("mnist-cnn").aliases
    images = synthetic_digits(3, seed=5)[0][..., np.newaxis]
    assert registry.load_model("models:/mnist-cnn@challenger").predict(images).shape == (3, 10)


def test_summary_of_a_missing_study_fails_without_creating_it(tune_project):
    result = run_stage(tune_project, "tune", args=["--summary-only", "--study", "typo"])
    assert result.returncode == 1
    assert "no study named 'typo'" in result.stderr and "--summary-only" in result.stderr
    storage = f"sqlite:///{tune_project}/optuna/studies.db"
    assert "typo" not in optuna.get_all_study_names(storage)
    assert mlflow_runs() == []


def test_an_unreachable_mlflow_server_fails_before_any_study_exists(tune_project):
    result = run_stage(tune_project, "tune", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert "MLflow tracking server http://127.0.0.1:9 does not answer" in result.stderr
    assert not (tune_project / "optuna" / "studies.db").exists()


def test_apply_changes_exactly_the_tuned_keys_and_keeps_comments(tmp_path):
    copy = tmp_path / "params.yaml"
    copy.write_text((REPO / "params.yaml").read_text())
    best = {
        "train.model.blocks.1.filters": 56,
        "train.learning_rate": 0.0031,
        "train.augment.rotate_deg": 7.5,
        "train.epochs": 9,
    }
    tune.apply_to_params(best, copy)
    before = yaml.safe_load((REPO / "params.yaml").read_text())
    after = yaml.safe_load(copy.read_text())
    flat_before, flat_after = tracking.flatten(before), tracking.flatten(after)
    changed = {k for k in flat_before if flat_before[k] != flat_after[k]}
    assert changed == set(best)
    assert all(flat_after[k] == v for k, v in best.items())
    original, written = (
        (REPO / "params.yaml").read_text().splitlines(),
        copy.read_text().splitlines(),
    )
    assert len(written) == len(original)
    assert sum(a != b for a, b in zip(original, written, strict=True)) == len(best)  # a line each


def test_the_search_space_is_read_from_params():
    space = config.load(overrides=["tune.space={train.epochs: {choices: [3, 5]}}"]).tune.space
    trial = optuna.trial.FixedTrial({"train.epochs": 5})
    assert tune.suggest(trial, space) == {"train.epochs": 5}


def start_tune(project: Path, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "src/tune.py", *args],
        cwd=project,
        text=True,
        env=dict(os.environ),
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout == subprocess.PIPE else subprocess.PIPE,
    )


def wait_for_first_epoch(worker: subprocess.Popen) -> None:
    """Read the worker's output until its trial reports an epoch: heartbeats are recorded by
    then (Optuna never marks stale a trial killed before its first heartbeat)."""
    seen = []
    for line in worker.stdout:
        seen.append(line)
        if line.startswith("trial 0 epoch 1/"):
            return
    pytest.fail("the worker ended before its first epoch:\n" + "".join(seen[-30:]))
