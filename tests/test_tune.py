"""tune: Optuna studies on tiny data, a real SQLite storage and a real MLflow store."""

from __future__ import annotations

import datetime
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import yaml

from common import errors
from conftest import REPO, TINY_SPACE, free_port, run_stage, set_tune, update_params
from ml import config, params_file, tune_params
from mnist_fakes import UNIT, synthetic_digits, synthetic_splits
from tracking import lineage, models, store
from tune_workers import mlflow_runs, start_tune, study_in, wait_for_first_epoch
from tuning import coordination, objective, pruning, runs, search, storage
from tuning.progress import SearchProgress


def test_a_three_trial_study_gives_three_child_runs_under_one_parent(tune_project):
    result = run_stage(tune_project, "tune", args=["--n-trials", "3"])
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study_in(tune_project).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    runs = mlflow_runs()
    (parent,) = [r for r in runs if "optuna_study" in r.data.tags]
    assert parent.info.run_name == "study-mnist-cnn" and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.info.run_name for c in children) == ["trial-0", "trial-1", "trial-2"]
    assert all(c.data.tags["trial_state"] == "COMPLETE" for c in children)
    assert set(children[0].data.params) == set(TINY_SPACE)
    # Trial 0 is the scratch params.yaml's values, 64 filters moved into the tiny space's 4-8;
    # its dense 256 is not among the space's choices, so the sampler draws that one.
    start = {"train.model.blocks.0.filters": 8, "train.learning_rate": 0.004}
    start |= {"train.augment.shift": 0.05, "train.epochs": 1}
    assert {key: trials[0].params[key] for key in start} == start
    history = mlflow.MlflowClient().get_metric_history(parent.info.run_id, "best_val_accuracy")
    running_best = np.maximum.accumulate([t.value for t in trials])
    history = sorted(history, key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx(running_best)
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in logged and "plots/intermediate_values.png" in logged
    best = yaml.safe_load((tune_project / "reports" / "tune" / "best_params.yaml").read_text())
    assert best["value"] == study_in(tune_project).best_value


def test_a_new_study_starts_from_params_yaml_moved_to_the_nearest_end_of_each_range():
    params = config.load(values={"train.epochs": 3, "train.learning_rate": 0.5})
    space = params.tune.space
    start = objective.starting_point(params, space)
    assert start["train.epochs"] == space["train.epochs"].low
    assert start["train.learning_rate"] == space["train.learning_rate"].high
    assert start["train.augment.shift"] == params.train.augment.shift  # inside: as it is
    assert set(start) == set(space)


def test_a_search_says_once_per_trial_how_far_it_is_and_nothing_else(tune_project):
    result = run_stage(tune_project, "tune", args=["--n-trials", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    ended = [line for line in lines if re.match(r"trial \d+ COMPLETE", line)]
    assert [line.split()[1] for line in ended] == ["0", "1"]  # each trial once
    assert "1 of 2 done" in ended[0] and "left" in ended[0] and "2 of 2 done" in ended[1]
    assert any(line.startswith("trial 0 (1 of 2) epoch 1/") for line in lines)
    assert "Trial 0 finished" not in result.stdout + result.stderr  # Optuna's own log line
    assert result.stderr == ""


def test_the_hint_to_apply_writes_that_studys_winner_without_searching(tune_project):
    result = run_stage(tune_project, "tune", args=["--n-trials", "2", "--study", "quick"])
    assert result.returncode == 0, result.stderr[-3000:]
    applied = run_hint(tune_project, result.stdout, "--apply")
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert len(study_in(tune_project, "quick").trials) == 2  # no trial ran
    params = config.load(tune_project / "params.yaml")
    flat = lineage.flatten(params.model_dump(mode="json"))
    best = study_in(tune_project, "quick").best_params
    assert {key: flat[key] for key in best} == best
    assert "run `dvc repro` to train it" in applied.stdout


def run_hint(project: Path, stdout: str, flag: str) -> subprocess.CompletedProcess[str]:
    """Run, as printed, the command a search suggests for `flag` (up to any `&&` or comment)."""
    hints = [line for line in stdout.splitlines() if flag in line]
    assert len(hints) == 1, stdout
    command = shlex.split(hints[0].split("&&")[0].split("#")[0])
    assert command[:2] == ["python", "src/tune.py"], hints[0]
    return run_stage(project, "tune", args=command[2:])


def test_a_trial_the_pruner_stops_is_pruned_in_optuna_and_mlflow():
    splits = synthetic_splits(120, seed=2, val=20)
    parent = runs.study_run("mnist-cnn", "pruning", "memory")
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01)
    )  # always
    trainer = objective.Objective(splits, UNIT, parent, config.load())
    study.optimize(trainer, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    (child,) = [r for r in mlflow_runs() if r.data.tags.get("mlflow.parentRunId") == parent]
    assert child.data.tags["trial_state"] == "PRUNED" and child.info.status == "FINISHED"


def test_no_pruner_stops_a_trial_after_the_last_prune_epoch():
    """A pruner that would stop every trial stops it only up to the last prune epoch."""
    always = optuna.pruners.ThresholdPruner(lower=1.01)
    study = optuna.create_study(pruner=pruning.EarlyOnly(always, pruning.LAST_PRUNE_EPOCH))
    trial = study.ask()
    decisions = []
    for step in range(1, pruning.LAST_PRUNE_EPOCH + 3):
        trial.report(0.5, step)
        decisions.append(trial.should_prune())
    assert decisions == [True] * pruning.LAST_PRUNE_EPOCH + [False, False]
    built = [pruning.pruner(name) for name in tune_params.PRUNERS]
    assert built and all(isinstance(p, pruning.EarlyOnly) for p in built)


def test_the_quartile_pruner_keeps_only_trials_in_the_top_quarter_of_complete_ones():
    """The bar is the complete trials at the same epoch, from the first prune epoch on and once
    enough have completed; pruned ones never lower it."""
    assert (pruning.FIRST_PRUNE_EPOCH, pruning.STARTUP_TRIALS) == (3, 3)  # the curves below
    study = optuna.create_study(direction="maximize", pruner=pruning.pruner("quartile"))
    low = [0.10, 0.10, 0.10, 0.10]

    def pruned_at(curve: list[float]) -> int | None:
        trial = study.ask()
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return step
        study.tell(trial, curve[-1])
        return None

    # Two complete trials are too few to judge by, even far below them.
    for curve in ([0.90, 0.93, 0.95, 0.96], [0.92, 0.94, 0.96, 0.97]):
        assert pruned_at(curve) is None
    assert pruned_at(low) is None
    for curve in ([0.94, 0.95, 0.97, 0.98], [0.96, 0.96, 0.98, 0.99]):
        assert pruned_at(curve) is None
    for _ in range(4):  # counted, these would lower the epoch-3 bar
        trial = study.ask()
        trial.report(0.10, 3)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    # Five complete trials; their top quarter: above 0.97 at epoch 3, 0.98 at epoch 4.
    assert pruned_at([0.10, 0.10, 0.96, 0.99]) == 3  # epochs 1 and 2 are never judged
    assert pruned_at([0.10, 0.10, 0.975, 0.975]) == 4
    assert pruned_at([0.10, 0.10, 0.975, 0.985]) is None
    assert pruned_at([0.10, 0.10, 0.99, 0.975]) is None  # its best so far counts, not its last


def test_trials_report_each_epoch_at_the_epochs_trained():
    splits = synthetic_splits(120, seed=3, val=20)
    parent = runs.study_run("mnist-cnn", "steps", "memory")
    tiny = "{train.epochs: {choices: [4]}, train.model.dense.0: {choices: [16]}}"
    params = config.load(overrides=[f"tune.space={tiny}"])
    trainer = objective.Objective(splits, UNIT, parent, params)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(trainer, n_trials=1)
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3, 4]


def test_two_workers_share_one_study_without_duplicate_or_lost_trials(tune_project):
    workers = [start_tune(tune_project, "--n-trials", "2") for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()[-3000:]
    trials = study_in(tune_project).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.state.name for t in trials} == {"COMPLETE"}
    drawn = {tuple(sorted(t.params.items())) for t in trials}
    assert len(drawn) == 4  # workers started together do not draw the same trials


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


def test_ctrl_c_fails_the_running_trial_and_ends_the_study_run_killed(tune_project):
    set_tune(tune_project, space=TINY_SPACE | {"train.epochs": {"low": 40, "high": 41}})
    worker = start_tune(tune_project, "--n-trials", "1", stdout=subprocess.PIPE)
    wait_for_first_epoch(worker)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=120) == 130
    said = worker.stdout.read()
    assert "error: interrupted by SIGINT" in said and "rerun the same command" in said
    assert "Traceback" not in said
    assert [t.state.name for t in study_in(tune_project).trials] == ["FAIL"]
    runs = {r.info.run_name: r for r in mlflow_runs()}
    assert runs["study-mnist-cnn"].info.status == "KILLED"
    assert runs["trial-0"].info.status == "FAILED"


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_retried(tmp_path):
    tune = config.load().tune.model_copy(update={"grace_s": 10})
    rdb = storage.storage(f"sqlite:///{tmp_path}/studies.db", tune)
    study = optuna.create_study(study_name="orphans", storage=rdb, direction="maximize")
    study.ask()  # RUNNING, never signed in: its worker died before the trial began
    coordination.sign_in(rdb, study.ask())  # RUNNING and alive: Optuna's heartbeats watch this one
    now = datetime.datetime.now()
    assert (
        coordination.fail_orphans(rdb, study, now) == []
    )  # within the grace period: may be starting
    later = now + datetime.timedelta(seconds=11)
    assert coordination.fail_orphans(rdb, study, later) == [0]
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING", "WAITING"]
    assert study.trials[2].system_attrs["failed_trial"] == 0  # the retry, queued once
    assert coordination.fail_orphans(rdb, study, later) == []


def test_a_quick_search_fixes_train_values_and_register_retrains_its_winner(tune_project):
    quick = ["-S", "tune.n_trials=1", "-S", "train.epochs=1"]
    narrower = ["-S", "tune.space.train.learning_rate.high=0.002"]
    result = run_stage(tune_project, "tune", args=[*quick, *narrower])
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = study_in(tune_project).trials
    assert "train.epochs" not in trial.params and trial.params["train.learning_rate"] <= 0.002
    (child,) = [r for r in mlflow_runs() if r.data.tags.get("optuna_trial") == "0"]
    assert child.data.params["train.epochs"] == "1"
    registered = run_hint(tune_project, result.stdout, "--register")
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert len(study_in(tune_project).trials) == 1  # no trial ran
    client = mlflow.MlflowClient(store.tracking_uri())
    version = client.get_model_version_by_alias("mnist-cnn", "challenger")
    assert version.tags["source"] == "tune" and version.tags["trial"] == "0"
    # Retrained with the fixed epochs=1, deterministically on CPU: the trial's own score.
    assert float(version.tags["val_accuracy"]) == trial.value
    assert "champion" not in client.get_registered_model("mnist-cnn").aliases
    images = synthetic_digits(3, seed=5)[0][..., np.newaxis]
    assert models.load_model("models:/mnist-cnn@challenger").predict(images).shape == (3, 10)


def test_register_and_apply_rebuild_the_trial_whatever_params_yaml_says_since(tune_project):
    """A trial records everything it trained with: edits to params.yaml after the search (here
    the batch size, which is not searched) change neither what --register retrains nor what
    --apply writes."""
    result = run_stage(tune_project, "tune", args=["--n-trials", "1", "--study", "edited"])
    assert result.returncode == 0, result.stderr[-3000:]
    (trial,) = study_in(tune_project, "edited").trials
    assert trial.user_attrs["trained_with"]["train"]["batch_size"] == 32
    update_params(tune_project, {"train": {"batch_size": 8, "model": {"dense_dropout": 0.45}}})
    registered = run_hint(tune_project, result.stdout, "--register")
    assert registered.returncode == 0, registered.stderr[-3000:]
    (retrained,) = [r for r in mlflow_runs() if r.info.run_name == "trial-0-retrained"]
    assert retrained.data.params["train.batch_size"] == "32"
    assert retrained.data.params["train.model.dense_dropout"] == "0.2"
    version = mlflow.MlflowClient(store.tracking_uri()).get_model_version_by_alias(
        "mnist-cnn", "challenger"
    )
    assert float(version.tags["val_accuracy"]) == trial.value  # the same training, bit for bit
    applied = run_hint(tune_project, result.stdout, "--apply")
    assert applied.returncode == 0, applied.stderr[-3000:]
    train = config.load(tune_project / "params.yaml").train
    assert train.model_dump(mode="json") == trial.user_attrs["trained_with"]["train"]


def test_apply_on_a_missing_study_fails_without_creating_it(tune_project):
    result = run_stage(tune_project, "tune", args=["--apply", "--study", "typo"])
    assert result.returncode == 1
    assert "no study named 'typo'" in result.stderr and "--study typo" in result.stderr
    storage = f"sqlite:///{tune_project}/optuna/studies.db"
    assert "typo" not in optuna.get_all_study_names(storage)
    assert not [r for r in mlflow_runs() if r.data.tags.get("optuna_study") == "typo"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--apply", "-S", "train.epochs=2"], "drop the train.* and seed -S values"),
        (["-S", "preprocess.val_size=100"], "-S preprocess.val_size: tune.py reads only"),
        (["--n-trials", "0"], "tune.n_trials: Input should be greater than 0"),
    ],
)
def test_bad_tune_commands_are_named_before_anything_loads(args, expected):
    result = subprocess.run(
        [sys.executable, "src/tune.py", *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_help_answers_without_loading_the_heavy_libraries():
    code = (
        "import runpy, sys\n"
        "sys.path.insert(0, 'src'); sys.argv = ['src/tune.py', '--help']\n"
        "try:\n    runpy.run_path('src/tune.py', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(set(sys.modules) & {'keras', 'tensorflow', 'optuna', 'mlflow'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "--apply" in result.stdout and result.stdout.splitlines()[-1] == "[]"


def test_a_worker_must_search_with_the_values_its_study_fixed():
    study = optuna.create_study(direction="maximize")
    coordination.keep_fixed(study, {"train.epochs": 2})
    coordination.keep_fixed(study, {"train.epochs": 2})  # the same: joins
    refused = re.escape("-S train.epochs=2, this command with none")
    with pytest.raises(errors.PipelineError, match=refused):
        coordination.keep_fixed(study, {})


def test_progress_counts_trials_and_estimates_the_time_left_within_the_budget():
    now = [100.0]
    progress = SearchProgress(n_trials=4, timeout_s=300, clock=lambda: now[0])
    assert progress.current() == "1 of 4" and progress.left_s() is None
    now[0] += 60
    assert progress.trial_ended() == "1 of 4 done, 0:01:00 elapsed, about 0:03:00 left"
    now[0] += 180  # slow trial: the timeout now ends the search first
    assert progress.trial_ended() == "2 of 4 done, 0:04:00 elapsed, about 0:01:00 left"
    assert progress.current() == "3 of 4"
    now[0] += 60
    assert progress.trial_ended() == "3 of 4 done, 0:05:00 elapsed"


def test_an_unreachable_mlflow_server_fails_before_any_study_exists(tune_project):
    result = run_stage(tune_project, "tune", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert "MLflow tracking server http://127.0.0.1:9 does not answer" in result.stderr
    assert not (tune_project / "optuna" / "studies.db").exists()


def test_a_database_that_is_down_fails_the_tuner_at_once_with_one_masked_line(tune_project):
    pytest.importorskip("psycopg", reason="PostgreSQL's driver comes with `uv sync --extra team`")
    url = f"postgresql://team:hunter2@127.0.0.1:{free_port()}/optuna"  # nothing listens there
    result = run_stage(tune_project, "tune", args=["--storage", url])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot open the study storage {url.replace('hunter2', '***')}")
    assert "Connection refused" in line and "hunter2" not in result.stdout + line
    assert mlflow_runs() == []  # no study run was opened


def test_a_storage_without_its_driver_names_the_install_in_one_masked_line(tune_project):
    url = "mysql://team:hunter2@127.0.0.1/optuna"  # MySQL's driver is not in the lock
    result = run_stage(tune_project, "tune", args=["--storage", url])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: no database driver for the study storage mysql://team:***@")
    assert "uv sync --extra team" in line and "hunter2" not in result.stdout + line


def test_apply_changes_exactly_the_tuned_keys_and_keeps_comments(tmp_path):
    copy = tmp_path / "params.yaml"
    copy.write_text((REPO / "params.yaml").read_text())
    best = {
        "train.model.blocks.1.filters": 56,
        "train.learning_rate": 0.0031,
        "train.augment.rotate_deg": 7.5,
        "train.epochs": 9,
    }
    params_file.set_values(best, copy)
    before = yaml.safe_load((REPO / "params.yaml").read_text())
    after = yaml.safe_load(copy.read_text())
    flat_before, flat_after = lineage.flatten(before), lineage.flatten(after)
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
    assert objective.suggest(trial, space) == {"train.epochs": 5}


def test_a_worker_joining_a_new_study_waits_for_its_creators_parent_run(tmp_path):
    """Workers on two machines share no file lock: only the study's creator makes the parent."""
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies.db'}")
    creator, created = coordination.open_study("shared", rdb, config.load().tune, existing=False)
    joiner, joined_too = coordination.open_study("shared", rdb, config.load().tune, existing=False)
    assert (created, joined_too) == (True, False)
    pauses = []

    def creator_finishes_while_the_joiner_waits(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            pauses.append(coordination.parent_run(creator, "mnist-cnn", rdb.url, created=True))

    joiners = coordination.parent_run(
        joiner, "mnist-cnn", rdb.url, created=False, pause=creator_finishes_while_the_joiner_waits
    )
    assert joiners == pauses[2]  # the creator's run, which it made during the joiner's wait
    assert [r.info.run_id for r in mlflow_runs()] == [joiners]  # one parent, not two


def test_a_joiner_whose_creator_never_records_a_parent_makes_it_after_waiting(tmp_path):
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies.db'}")
    tune = config.load().tune
    coordination.open_study("orphan", rdb, tune, existing=False)  # its creator died here
    joiner, _ = coordination.open_study("orphan", rdb, tune, existing=False)
    pauses = []
    parent = coordination.parent_run(
        joiner, "mnist-cnn", rdb.url, created=False, pause=pauses.append
    )
    assert len(pauses) == coordination.PARENT_WAITS
    assert joiner.user_attrs[coordination.PARENT_ATTR] == parent
    assert [r.info.run_name for r in mlflow_runs()] == ["study-orphan"]


def test_the_next_step_hints_name_the_storage_variable_not_its_password(monkeypatch):
    url = "postgresql://team:hunter2@db:5432/optuna"
    flagged = {"tune.storage": url, "tune.study": "shared"}  # tune.py's --storage and --study
    tune = config.load(values=flagged).tune
    assert search.flags(tune) == "--study shared --storage postgresql://team:***@db:5432/optuna"
    monkeypatch.setenv("OPTUNA_STORAGE", url)
    assert search.flags(tune) == '--study shared --storage "$OPTUNA_STORAGE"'
    named = config.load(overrides=["tune.storage=${TEAM_DB}", "tune.study=shared"]).tune
    assert search.flags(named) == '--study shared --storage "$TEAM_DB"'


def test_apply_sets_only_the_leaves_that_differ_and_whole_lists_whose_length_changed():
    now = {"epochs": 12, "model": {"dense": [128], "blocks": [{"filters": 32}, {"filters": 48}]}}
    wanted = {
        "epochs": 12,
        "model": {"dense": [64, 32], "blocks": [{"filters": 32}, {"filters": 56}]},
    }
    assert params_file.differences(now, wanted, "train") == {
        "train.model.dense": [64, 32],
        "train.model.blocks.1.filters": 56,
    }
