"""tracking: one MLflow run per pipeline, lineage, epoch metrics, fail-fast."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import threading

import mlflow
import pandas as pd
import pytest

from conftest import closed_port_url
from ml import config, training
from mnist_fakes import UNIT
from tracking import lineage, logs, pipeline_run, store
from tuning import runs


def only_run(experiment: str) -> mlflow.entities.Run:
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert len(runs) == 1
    return runs[0]


def test_a_pipeline_run_records_params_lineage_and_each_epoch(tiny_splits, device):
    params = config.load()
    tiny = params.train.model_copy(update={"epochs": 2, "batch_size": 32})
    tags = lineage.lineage(params, "d" * 64, device.describe())
    with pipeline_run.pipeline_run(params, tags):
        training.fit(
            tiny_splits,
            tiny,
            0,
            UNIT,
            device,
            callbacks=[logs.EpochMetrics()],
            verbose=0,
        )
    run = only_run(params.tracking.experiment)
    assert run.data.params["train.model.blocks.0.filters"] == str(
        params.train.model.blocks[0].filters
    )
    assert run.data.params["seed"] == str(params.seed)
    assert run.data.tags["data_digest"] == "d" * 64
    assert len(run.data.tags["git_commit"]) == 40 and run.data.tags["git_dirty"] in {
        "true",
        "false",
    }
    assert {"params_hash", "arch", "device"} <= set(run.data.tags)
    assert run.data.tags["keras_backend"] == "tensorflow"
    assert run.data.tags["device"] == "tensorflow on CPU (oneDNN), float32"
    dirty = "-dirty" if run.data.tags["git_dirty"] == "true" else ""
    assert run.info.run_name == f"repro-{run.data.tags['git_commit'][:7]}{dirty}"
    client = mlflow.MlflowClient()
    for metric in (
        "epoch/loss",
        "epoch/accuracy",
        "epoch/val_loss",
        "epoch/val_accuracy",
        "epoch/lr",
    ):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2]


def trained(params: config.Params, model_file, content: bytes, experiment: str = "") -> str:
    """A pipeline run that 'saved' `content` as its model, as train does."""
    if experiment:
        params = params.model_copy(
            update={"tracking": params.tracking.model_copy(update={"experiment": experiment})}
        )
    with pipeline_run.pipeline_run(params, {}) as run_id:
        model_file.write_bytes(content)
        pipeline_run.mark_trained(model_file)
    return run_id


def test_evaluate_resumes_the_run_that_trained_the_model_s_bytes(tmp_path):
    params = config.load()
    model_file = tmp_path / "model.keras"
    first = trained(params, model_file, b"weights A")
    trained(params, model_file, b"weights B", experiment="elsewhere")
    model_file.write_bytes(b"weights A")  # DVC restored A from its cache: no training ran
    with pipeline_run.resumed_run(model_file) as resumed:
        logs.log_metrics({"test_accuracy": 0.5})
    assert resumed == first
    run = mlflow.get_run(first)
    assert run.data.metrics["test_accuracy"] == 0.5
    assert run.data.tags["trained_in_run"] == first


def test_the_newest_run_of_identical_bytes_is_resumed(tmp_path):
    """A retraining to the same weights writes the same file: its own run gets the evaluation."""
    params = config.load()
    model_file = tmp_path / "model.keras"
    trained(params, model_file, b"same weights")
    newest = trained(params, model_file, b"same weights", experiment="later")
    with pipeline_run.resumed_run(model_file) as resumed:
        pass
    assert resumed == newest


def test_a_model_this_store_never_trained_is_an_error_naming_the_fix(tmp_path):
    trained(config.load(), tmp_path / "model.keras", b"known")
    stranger = tmp_path / "pulled.keras"
    stranger.write_bytes(b"trained on a teammate's machine, tracked elsewhere")
    fix = r"set MLFLOW_TRACKING_URI to the store train used, or retrain it .*dvc repro -f train"
    with pytest.raises(store.TrackingError, match=fix), pipeline_run.resumed_run(stranger):
        pass


def test_under_dvc_exp_run_the_run_is_named_and_tagged_for_the_dvc_experiment(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-pump")
    params = config.load()
    with pipeline_run.pipeline_run(params, lineage.lineage(params, "d" * 64, "CPU")):
        pass
    run = only_run(params.tracking.experiment)
    assert run.info.run_name == "bushy-pump" and run.data.tags["dvc_experiment"] == "bushy-pump"


def test_the_printed_ui_link_opens_the_runs_of_the_runs_experiment(mlflow_store):
    store.connect(mlflow_store)
    experiment = store.experiment_id("linked")
    run = mlflow.MlflowClient().create_run(experiment)
    page = store.runs_page(run.info.run_id)
    link = f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning"
    assert page == f"`mlflow ui` in the repo root, then {link}"


def test_a_checkout_is_dirty_when_code_or_params_change_not_when_the_pipeline_writes(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    (tmp_path / "reports").mkdir()
    for name in ("reports/metrics.json", "dvc.lock", "params.yaml"):
        (tmp_path / name).write_text("1\n")
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    (tmp_path / "reports" / "metrics.json").unlink()  # as DVC does before running a stage
    (tmp_path / "dvc.lock").write_text("2\n")  # as DVC does after each stage
    assert lineage.git_state(tmp_path)["git_dirty"] == "false"
    (tmp_path / "params.yaml").write_text("2\n")  # as `dvc exp run -S` does
    assert lineage.git_state(tmp_path)["git_dirty"] == "true"


def test_artifacts_of_a_sqlite_store_live_beside_the_database(mlflow_store):
    store.connect(mlflow_store)
    exp = mlflow.get_experiment(store.experiment_id("beside"))
    assert exp.artifact_location == store.artifact_root(mlflow_store)
    assert exp.artifact_location.endswith("/mlruns-store/mlruns")


def test_an_unreachable_tracking_server_fails_at_connect_with_the_uri_and_the_fix():
    url = closed_port_url()
    with pytest.raises(store.TrackingError) as err:
        store.connect(url)  # before any MLflow call, so none of its retries are waited out
    assert url in str(err.value) and "MLFLOW_TRACKING_URI" in str(err.value)


class HealthyButHung(http.server.BaseHTTPRequestHandler):
    """Answers /health, then leaves every API call unanswered until the test lets go."""

    release = threading.Event()

    def do_GET(self) -> None:
        if self.path != "/health":
            self.release.wait()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("hung", ["the health check", "the account check"])
def test_a_server_that_takes_the_call_but_never_answers_fails_in_one_line(hung, monkeypatch):
    """A hung server (or one too busy to answer within MLFLOW_HTTP_REQUEST_TIMEOUT) is a
    TrackingError naming the URI, not a requests traceback, whichever call it hangs on."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "0.5")
    with contextlib.ExitStack() as stack:
        if hung == "the health check":
            silent = stack.enter_context(socket.create_server(("127.0.0.1", 0)))  # never read
            port = silent.getsockname()[1]
        else:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthyButHung)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            stack.callback(server.shutdown)
            stack.callback(HealthyButHung.release.set)
            port = server.server_address[1]
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(store.TrackingError) as err:
            store.connect(url)
    assert f"{url} does not answer (ReadTimeout)" in str(err.value)


def test_flatten_names_keys_as_in_params_yaml():
    assert lineage.flatten({"a": {"b": [1, {"c": 2}]}, "d": None}) == {
        "a.b.0": 1,
        "a.b.1.c": 2,
        "d": None,
    }


def test_each_worker_s_study_summary_replaces_the_last_on_the_parent_run():
    """Every worker of a study logs the summary when it finishes: the parent run must hold the
    last one, not the rows of each appended (MLflow's log_table appends)."""
    parent = mlflow.MlflowClient().create_run(store.experiment_id("study")).info.run_id
    values = [0.90, 0.91, 0.92]
    for seen in (2, 3):  # the first worker to finish saw 2 trials done, the second 3
        table = pd.DataFrame({"number": range(seen), "value": values[:seen]})
        best = {"trial": seen - 1, "value": values[seen - 1], "params": {}}
        runs.log_study_summary(parent, {}, table, best, table.rename(columns={"number": "trial"}))
    logged = mlflow.artifacts.load_dict(f"runs:/{parent}/trials.json")
    front = mlflow.artifacts.load_text(f"runs:/{parent}/pareto_front.csv")
    assert front.splitlines() == ["trial,value", "0,0.9", "1,0.91", "2,0.92"]
    assert logged == {"columns": ["number", "value"], "data": [[0, 0.9], [1, 0.91], [2, 0.92]]}
    tags = mlflow.get_run(parent).data.tags
    assert (tags["best_trial"], tags["best_value"]) == ("2", "0.92")
