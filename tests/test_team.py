"""Team mode on real servers on 127.0.0.1: one PostgreSQL for tuning workers and for MLflow, an
S3 API for artifacts, `mlflow server` with basic auth."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
import requests

import postgres_server
from conftest import TINY_SPACE, run_stage, set_tune, update_params, venv_env
from mnist_fakes import synthetic_digits
from test_predict import as_user_png
from test_tune import mlflow_runs, start_tune, wait_for_first_epoch

pytestmark = pytest.mark.team
PASSWORD = f"pw-{secrets.token_hex(8)}"  # must never show in output, params or tags
ADMIN_PASSWORD = f"admin-{secrets.token_hex(8)}"


def unavailable() -> str | None:
    needed = ("psycopg", "moto", "flask_wtf", "dvc_s3")
    if any(importlib.util.find_spec(name) is None for name in needed):
        return "the team extra is not installed: uv sync --extra team"
    if postgres_server.bin_dir() is None:
        return "no PostgreSQL server: apt-get install postgresql"
    return None


def fail_or_skip_without_the_stack() -> None:
    """CI sets REQUIRE_TEAM_TESTS, so there a missing piece fails rather than skips."""
    missing = unavailable()
    if missing is not None:
        if os.environ.get("REQUIRE_TEAM_TESTS"):
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    fail_or_skip_without_the_stack()
    with postgres_server.running(PASSWORD, databases=("mlflow", "auth")) as url:
        yield url


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3 API on 127.0.0.1 with one bucket, stopped even when a test fails."""
    fail_or_skip_without_the_stack()
    import team_servers  # needs the team extra

    with team_servers.s3(Path(tempfile.mkdtemp(prefix="s3-"))) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def mlflow_server(postgres_url: str, s3_endpoint: str) -> Iterator[tuple[str, str]]:
    """The MLflow server (backend and users in PostgreSQL, artifacts in S3); its URL and the
    S3 endpoint."""
    import team_servers

    base = postgres_url.rsplit("/", 1)[0]
    root = Path(tempfile.mkdtemp(prefix="mlflow-"))
    backend, users = f"{base}/mlflow", f"{base}/auth"
    with team_servers.tracking(root, backend, users, s3_endpoint, ADMIN_PASSWORD) as url:
        yield url, s3_endpoint


def as_admin(url: str, password: str = ADMIN_PASSWORD) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": password,
    }


def test_a_pipeline_run_is_tracked_registered_and_stored_through_the_team_server(
    project, mirror, mlflow_server, monkeypatch
):
    import team_servers

    url, s3 = mlflow_server
    update_params(project, {"tracking": {"champion_floor": 0.0}})  # tiny data: a weak model
    (project / "data").mkdir()
    (project / "data" / "raw").symlink_to(mirror[0])
    said = []
    for stage in ("preprocess", "train", "evaluate"):
        result = run_stage(project, stage, env=as_admin(url))
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
        said += [result.stdout, result.stderr]
    assert f"{url}/#/experiments/" in said[-2]  # evaluate's link is the server's
    digit = project / "digit.png"
    as_user_png(synthetic_digits(1, seed=4)[0][0], digit, (90, 70), dark_on_light=True)
    predicted = run_stage(project, "predict", env=as_admin(url), args=[str(digit)])
    assert predicted.returncode == 0, predicted.stderr[-3000:]  # the champion, from the server
    assert "models:/mnist-cnn@champion (version 1)" in predicted.stdout
    said += [predicted.stdout, predicted.stderr]

    for name, value in as_admin(url).items():
        monkeypatch.setenv(name, value)
    client = mlflow.MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("mnist-cnn").experiment_id])
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "epoch/val_accuracy")) == 1
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    assert champion.run_id == run.info.run_id
    stored = team_servers.client(s3).list_objects_v2(Bucket=team_servers.BUCKET)["Contents"]
    keys = [item["Key"] for item in stored]
    assert any(key.endswith("eval/confusion.png") for key in keys)
    assert any(key.endswith("MLmodel") for key in keys)  # the logged model, in S3
    logged = [*run.data.params.values(), *run.data.tags.values()]
    assert not any(ADMIN_PASSWORD in text or PASSWORD in text for text in [*said, *logged])


def test_the_server_turns_away_requests_and_stages_without_its_account(
    project, mirror, mlflow_server
):
    url, _ = mlflow_server
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=("admin", ADMIN_PASSWORD), timeout=10).status_code == 200
    (project / "data").mkdir()
    (project / "data" / "raw").symlink_to(mirror[0])
    assert run_stage(project, "preprocess").returncode == 0
    wrong = as_admin(url, password="not-the-password")
    result = run_stage(project, "train", env=wrong)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"MLflow tracking server {url} requires an account (HTTP 401)" in line
    assert "MLFLOW_TRACKING_USERNAME" in line and "not-the-password" not in line


def test_four_workers_share_a_postgres_study_and_a_killed_ones_trial_is_retried_once(
    tune_project, postgres_url
):
    storage = ["--storage", postgres_url]
    set_tune(tune_project, space=TINY_SPACE | {"train.epochs": {"low": 40, "high": 41}})
    doomed = start_tune(tune_project, *storage, "--n-trials", "1", stdout=subprocess.PIPE)
    wait_for_first_epoch(doomed)  # trial 0, with a heartbeat, in mid-training
    set_tune(tune_project, space=TINY_SPACE)
    others = [
        start_tune(tune_project, *storage, "--n-trials", "2", stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    doomed.send_signal(signal.SIGKILL)
    said = [doomed.communicate(timeout=60)[0]]
    for worker in others:
        out, _ = worker.communicate(timeout=900)
        assert worker.returncode == 0, out[-3000:]
        said.append(out)
    # The last worker starts alone, with a grace period its own start-up outlasts: it fails
    # the killed trial and runs its retry; no live worker is left to be misjudged.
    set_tune(tune_project, space=TINY_SPACE, grace_s=1)
    last = run_stage(tune_project, "tune", args=[*storage, "--n-trials", "1"])
    assert last.returncode == 0, last.stderr[-3000:]
    said += [last.stdout, last.stderr]

    trials = optuna.load_study(study_name="mnist-cnn", storage=postgres_url).trials
    assert [t.number for t in trials] == list(range(6))  # none lost, none twice
    states = [t.state.name for t in trials]
    assert states == ["FAIL"] + ["COMPLETE"] * 5
    assert [t.system_attrs.get("failed_trial") for t in trials].count(0) == 1  # retried once
    runs = mlflow_runs()
    by_trial = {r.data.tags.get("optuna_trial"): r for r in runs}
    assert by_trial["0"].info.status == "FAILED"
    assert sorted(k for k in by_trial if k is not None) == [str(n) for n in range(6)]

    assert not any(PASSWORD in text for text in said)
    logged = [str(v) for r in runs for v in (*r.data.params.values(), *r.data.tags.values())]
    assert not any(PASSWORD in value for value in logged)
    (study_run,) = [r for r in runs if "optuna_study" in r.data.tags]
    assert study_run.data.tags["optuna_storage"] == postgres_url.replace(PASSWORD, "***")


def test_dvc_push_then_pull_in_a_fresh_clone_restores_the_same_data_and_model(
    project, mirror, s3_endpoint, monkeypatch, tmp_path
):
    """The DVC remote on the team's S3: its address is committed, its endpoint and credentials
    are not (config.local and the environment)."""
    import team_servers

    for name, value in team_servers.S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    git(project, "init", "-q")
    dvc(project, "init", "-q")
    dvc(project, "remote", "add", "-d", "team", f"s3://{team_servers.BUCKET}/dvc")
    dvc(project, "remote", "modify", "--local", "team", "endpointurl", s3_endpoint)
    # The synthetic digits are not the published MNIST that fetch verifies: they stand in for
    # fetch's output, recorded as if fetched, and the rest of the pipeline runs for real.
    shutil.copytree(mirror[0], project / "data" / "raw")
    dvc(project, "commit", "-f", "fetch")
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a trained model")
    dvc(project, "push")

    clone = tmp_path / "teammate"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    assert s3_endpoint not in (clone / ".dvc" / "config").read_text()  # not committed
    dvc(clone, "remote", "modify", "--local", "team", "endpointurl", s3_endpoint)
    dvc(clone, "pull")
    for path in ("data/raw", "data/processed", "models/model.keras"):
        assert digests(clone / path) == digests(project / path), path


def git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=team", "-c", "user.email=team@localhost"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


def dvc(root: Path, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env=venv_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def digests(path: Path) -> dict[str, str]:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {
        str(item.relative_to(path.parent)): hashlib.sha256(item.read_bytes()).hexdigest()
        for item in files
        if item.is_file()
    }
