"""Faults: each class of bad input, broken store and killed process ends with one clear line,
a non-zero exit, no traceback, and nothing lost or half-written. Tiny data, real stages."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import optuna
import psutil
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

import predict
from common import files
from common.errors import PipelineError
from conftest import room_for, run_stage, serving, update_params
from ml import config, data, download, model, training
from tracking import pipeline_run, store

TRACEBACK = "Traceback (most recent call last)"


def one_error_line(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """The stage failed with exactly one `error:` line holding every phrase, and no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert TRACEBACK not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def damage(path: Path) -> None:
    """Overwrite bytes in the middle of a file, as a bad disk or an interrupted copy would."""
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 16] = b"\xff" * 16
    path.write_bytes(bytes(blob))


@pytest.fixture
def raw_project(project: Path, mirror) -> Path:
    """The scratch project with its own copy of the synthetic raw data."""
    shutil.copytree(mirror[0], project / "data" / "raw")
    return project


@pytest.fixture
def processed_project(raw_project: Path) -> Path:
    assert run_stage(raw_project, "preprocess").returncode == 0
    return raw_project


# --- data files ---


def test_a_damaged_raw_file_is_replaced_by_fetch(tmp_path, mirror):
    directory, digests = mirror
    raw = tmp_path / "raw"
    shutil.copytree(directory, raw)
    damage(raw / "train-images-idx3-ubyte.gz")
    limits = download.Limits(timeout_s=5, deadline_s=60, min_rate_bps=0)
    download.fetch_all([download.Source(str(directory))], raw, digests, 0, limits)
    for name, digest in digests.items():
        assert download.is_valid(raw / f"{name}.gz", name, digest)


def test_preprocess_names_a_damaged_raw_file_and_writes_nothing(raw_project):
    damage(raw_project / "data" / "raw" / "train-images-idx3-ubyte.gz")
    result = run_stage(raw_project, "preprocess")
    one_error_line(result, "train-images-idx3-ubyte.gz", "`dvc repro` fetches it again")
    assert not (raw_project / "data" / "processed").exists()


@pytest.mark.parametrize("harm", ["truncate", "bitflip", "empty", "text"])
def test_a_corrupt_split_is_named_with_the_fix(tmp_path, harm):
    split = tmp_path / "train.npz"
    data.save_split(split, data.Split(np.ones((50, 28, 28, 1), np.uint8), np.ones(50, np.uint8)))
    harms = {
        "truncate": lambda: split.write_bytes(split.read_bytes()[: split.stat().st_size // 2]),
        "bitflip": lambda: damage(split),
        "empty": lambda: split.write_bytes(b""),
        "text": lambda: split.write_text("x,y\n1,2\n"),
    }
    harms[harm]()
    with pytest.raises(data.DataError, match=r"train.npz: not a readable split .*`dvc repro` rebu"):
        data.load_split(split)


def test_train_names_a_corrupt_split_and_writes_no_model(processed_project):
    damage(processed_project / "data" / "processed" / "train.npz")
    result = run_stage(processed_project, "train")
    one_error_line(result, "train.npz", "`dvc repro` rebuilds it")
    assert not (processed_project / "models").exists()


def test_a_corrupt_scaling_file_is_named_with_the_fix(tmp_path):
    data.save_split(
        tmp_path / "train.npz", data.Split(np.ones((5, 28, 28, 1), np.uint8), np.ones(5))
    )
    shutil.copy(tmp_path / "train.npz", tmp_path / "val.npz")
    (tmp_path / "scaling.json").write_text('{"scale": ')
    with pytest.raises(PipelineError, match=r"scaling.json: not readable JSON .*`dvc repro` rebu"):
        training.load_inputs(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a zip", "half", "bitflip"])
def test_a_damaged_model_file_is_named_with_the_fix(tmp_path, content):
    model_file = tmp_path / "model.keras"
    tiny = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)]))
    tiny.save(model_file)
    if content == "half":
        model_file.write_bytes(model_file.read_bytes()[:-200])
    elif content == "bitflip":
        damage(model_file)
    else:
        model_file.write_bytes(content)
    with pytest.raises(PipelineError, match=r"model.keras: .*train one with `dvc repro`") as err:
        model.load(model_file)
    assert "File not found" not in str(err.value)


def test_evaluate_of_a_model_no_tracked_run_trained_stops_before_any_work(processed_project):
    """A model copied in, or pulled while MLFLOW_TRACKING_URI points at another store."""
    models_dir = processed_project / "models"
    models_dir.mkdir()
    model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)])).save(
        models_dir / "model.keras"
    )
    result = run_stage(processed_project, "evaluate")
    fix = "retrain it here with `dvc repro -f train`"
    one_error_line(result, "no MLflow run in sqlite:///", "model.keras (md5 ", fix)
    assert not (processed_project / "reports" / "eval").exists()


def test_files_written_by_stages_are_readable_as_the_umask_allows(tmp_path):
    previous = os.umask(0o022)
    try:
        files.write_bytes(tmp_path / "shared.bin", b"x")
        os.umask(0o077)
        files.write_bytes(tmp_path / "private.bin", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.bin").stat().st_mode & 0o777 == 0o600


# --- predict.py ---


def digit_png(path: Path) -> None:
    """A plain "1": white bar on black."""
    digit = np.zeros((60, 60), np.uint8)
    digit[10:50, 25:35] = 255
    Image.fromarray(digit).save(path)


def test_predict_bounds_the_image_size_and_still_predicts_the_other_files(tmp_path, capsys):
    tiny = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)]))
    tiny.save(tmp_path / "tiny.keras")
    Image.new("L", (8000, 8000), 0).save(tmp_path / "bomb.png")  # 64 MP, a few kB on disk
    digit_png(tmp_path / "one.png")
    names = ["bomb.png", "gone.png", "one.png"]
    argv = [*(str(tmp_path / name) for name in names), "--model", str(tmp_path / "tiny.keras")]
    assert predict.main(argv) == 1
    out, err = capsys.readouterr()
    assert "bomb.png: 8000x8000 pixels is more than this tool decodes" in err
    assert "gone.png: not found" in err
    assert out.splitlines()[1].startswith(f"{tmp_path / 'one.png'}: ") and TRACEBACK not in err


def test_predict_names_a_damaged_model(tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 truncated")
    digit_png(tmp_path / "x.png")
    with pytest.raises(PipelineError, match=r"bad\.keras: not a Keras model file"):
        predict.main([str(tmp_path / "x.png"), "--model", str(tmp_path / "bad.keras")])


def test_predict_names_a_broken_params_file(project, tmp_path):
    digit_png(tmp_path / "x.png")
    (project / "params.yaml").write_text("train: [unclosed\n")
    result = run_stage(project, "predict", args=[str(tmp_path / "x.png")])
    one_error_line(result, "params.yaml is not valid YAML")


# --- the tracking store ---


def test_a_locked_tracking_store_is_one_line_naming_the_store_and_the_fix(
    processed_project, mlflow_store
):
    store.experiment_id("mnist-cnn")  # the store exists, with its tables
    holder = sqlite3.connect(mlflow_store.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what a crashed or busy writer leaves
    try:
        result = run_stage(processed_project, "train")
    finally:
        holder.close()
    one_error_line(result, "MLflow store sqlite:///", "database is locked", "retry when")
    assert not (processed_project / "models").exists()


class FailingApi(http.server.BaseHTTPRequestHandler):
    """A tracking server whose health check passes but whose every API call fails."""

    def do_GET(self) -> None:
        self.answer(200 if self.path == "/health" else 500)

    def do_POST(self) -> None:
        self.answer(500)

    def answer(self, status: int) -> None:
        body = b"OK" if status == 200 else b'{"error_code": "INTERNAL_ERROR"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    with serving(FailingApi) as url:
        yield url


def test_a_server_failing_its_api_fails_the_stage_at_connect_before_any_work(
    processed_project, failing_server
):
    """MLflow's client would retry each call for minutes; the connect check asks the API once
    (with the client's own retries, a restart mid-run is still ridden out)."""
    result = run_stage(processed_project, "train", env={"MLFLOW_TRACKING_URI": failing_server})
    one_error_line(
        result,
        f"MLflow tracking server {failing_server} answers HTTP 500",
        "/api/2.0/mlflow/experiments/search: it is up but failing; see the server's log",
    )
    assert "training on" not in result.stdout and not (processed_project / "models").exists()


def test_a_failing_api_call_once_under_way_is_one_line_naming_the_store():
    err = MlflowException("API request to endpoint /api/2.0/mlflow/runs/log-batch failed")
    assert "check the server's log" in str(store.store_failure(err))


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` and its files cannot be written: a read-only mount as root (whom file modes do
    not stop, as in CI), the modes otherwise."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", folder, folder], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", folder, folder], check=True)
            yield
        finally:
            subprocess.run(["umount", folder], check=True)
    else:
        modes = {path: path.stat().st_mode for path in (folder, *folder.iterdir())}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)


def test_a_read_only_tracking_store_fails_the_stage_at_connect_in_one_line(
    processed_project, mlflow_store
):
    store.experiment_id("mnist-cnn")  # the store exists, with its tables
    database = Path(mlflow_store.removeprefix("sqlite:///"))
    with read_only(database.parent):
        result = run_stage(processed_project, "train")
    one_error_line(result, f"MLflow store {database} is read-only", "make it and its folder")
    assert "training on" not in result.stdout and not (processed_project / "models").exists()


def test_a_store_that_turns_read_only_mid_run_is_named_by_its_cause_not_sqlalchemy_s_notes():
    message = (
        "(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush "
        "block if this flush is occurring prematurely)\n(sqlite3.OperationalError) attempt to "
        "write a readonly database\n[SQL: INSERT INTO runs ...]"
    )
    line = str(store.store_failure(MlflowException(message)))
    assert "attempt to write a readonly database; make the database file" in line
    assert "autoflush" not in line


def test_the_client_s_retry_defaults_are_set_and_a_user_s_own_choice_is_kept(
    monkeypatch, mlflow_store
):
    for name in store.HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # a user's own choice is kept
    store.connect(mlflow_store)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "6"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


# --- a full disk ---


def test_a_full_disk_while_train_saves_is_one_line_and_the_previous_model_stays(
    processed_project, mlflow_store
):
    assert run_stage(processed_project, "train").returncode == 0
    models_dir = processed_project / "models"
    before = {path.name: path.read_bytes() for path in models_dir.iterdir()}
    with room_for(models_dir, spare=400_000):
        result = run_stage(processed_project, "train")
        left = {path.name: path.read_bytes() for path in models_dir.iterdir()}
    one_error_line(
        result,
        f"no space left on the file system at {models_dir} (writing {models_dir}/model.keras)",
        "free some space there and rerun the stage; no file was left half-written",
    )
    assert left == before  # the model whole, no temp file beside it
    runs = mlflow.search_runs(experiment_names=["mnist-cnn"], output_format="list")
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED"]


def test_a_full_disk_under_the_runs_artifacts_is_one_line_and_the_run_failed(
    processed_project, mlflow_store
):
    """The embedded store's artifacts (mlruns/) on a full file system: MLflow's own copy fails,
    deep inside it; the stage still says what is full in one line."""
    assert run_stage(processed_project, "train").returncode == 0
    artifacts = Path(mlflow_store.removeprefix("sqlite:///")).parent / "mlruns"
    with room_for(artifacts, spare=20_000):
        result = run_stage(processed_project, "train")
    one_error_line(
        result, f"no space left on the file system at {artifacts} (writing under", "rerun the stage"
    )
    runs = mlflow.search_runs(experiment_names=["mnist-cnn"], output_format="list")
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED"]


def test_a_full_disk_under_the_study_is_one_line_and_its_trials_are_kept(tune_project):
    args = ["--n-trials", "1", "--study", "full"]
    assert run_stage(tune_project, "tune", args=args).returncode == 0
    with room_for(tune_project / "optuna", spare=4096):
        result = run_stage(tune_project, "tune", args=args)
    one_error_line(result, "database or disk is full", "free some space")
    study = optuna.load_study(
        study_name="full", storage=f"sqlite:///{tune_project}/optuna/studies.db"
    )
    assert [trial.state.name for trial in study.trials][:1] == ["COMPLETE"]


# --- killed stages ---


def test_train_stopped_by_sigterm_ends_its_run_killed_and_leaves_no_model(processed_project):
    update_params(processed_project, {"train": {"epochs": 200}})  # still training when stopped
    stage = subprocess.Popen(
        [sys.executable, "src/train.py"],
        cwd=processed_project,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in stage.stdout:
        if line.startswith("training on "):
            break
    stage.send_signal(signal.SIGTERM)
    _, stderr = stage.communicate(timeout=120)
    result = subprocess.CompletedProcess(stage.args, stage.returncode, "", stderr)
    one_error_line(result, "interrupted by SIGTERM", "rerun the same command")
    assert stage.returncode == 130
    (run,) = mlflow.search_runs(experiment_names=["mnist-cnn"], output_format="list")
    assert run.info.status == "KILLED"
    assert not (processed_project / "models" / "model.keras").exists()


def killed_process() -> str:
    """The OWNER_TAG value of a real process, SIGKILLed: what a killed stage leaves behind."""
    victim = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    process = psutil.Process(victim.pid)
    owner = f"{socket.gethostname()}:{victim.pid}:{process.create_time():.3f}"
    victim.kill()
    victim.wait()
    return owner


def test_the_next_run_ends_the_run_of_a_killed_process(processed_project):
    """SIGKILL cannot be caught: the run stays RUNNING until the next stage's run starts."""
    experiment = store.experiment_id("mnist-cnn")
    client = mlflow.MlflowClient()
    orphan = client.create_run(experiment, tags={pipeline_run.OWNER_TAG: killed_process()})
    study = client.create_run(experiment)  # not a pipeline run (no owner): never touched
    params = config.load(processed_project / "params.yaml")
    with pipeline_run.pipeline_run(params, {}) as live_id:
        assert mlflow.get_run(orphan.info.run_id).info.status == "KILLED"
        assert mlflow.get_run(live_id).info.status == "RUNNING"  # this process is alive
    assert mlflow.get_run(study.info.run_id).info.status == "RUNNING"
    tags = mlflow.get_run(orphan.info.run_id).data.tags
    assert tags["ended_because"].startswith("its process was gone")


def test_a_split_written_by_a_killed_stage_is_complete_or_absent(tmp_path):
    """Writes go to a temp file renamed at the end: an error midway leaves the old file."""
    target = tmp_path / "processed" / "train.npz"
    data.save_split(target, data.Split(np.zeros((2, 28, 28, 1), np.uint8), np.zeros(2, np.uint8)))
    before = target.read_bytes()
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed midway")
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["train.npz"]
