"""Team mode on real servers on 127.0.0.1, started by the project's own stack script
(src/team_stack.py): one PostgreSQL for tuning workers and for MLflow, an S3 API for artifacts
and the DVC remote, `mlflow server` with basic auth."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
import requests
from mlflow.exceptions import MlflowException

from conftest import (
    REPO,
    TINY_SPACE,
    closed_port_url,
    dvc,
    git,
    run_stage,
    set_tune,
    start_queue,
    stop_queue,
    update_params,
    venv_env,
    wait_for_experiments,
    wait_until_ready,
)
from mnist_fakes import synthetic_digits
from team import local_servers, postgres_cluster
from team import stack as team_stack
from tracking import pipeline_run, registry
from tune_workers import mlflow_runs, start_tune, wait_for_first_epoch
from user_files import as_user_png

pytestmark = pytest.mark.team


def unavailable() -> str | None:
    if any(importlib.util.find_spec(name) is None for name in team_stack.NEEDS_EXTRA):
        return "the team extra is not installed: uv sync --extra team"
    if postgres_cluster.bin_dir() is None:
        return "no PostgreSQL server: apt-get install postgresql"
    return None


@pytest.fixture(scope="module")
def stack_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`team_stack.py start` as a user runs it; yield its directory. Stopped even when a test
    fails, and then no server of it is left running."""
    missing = unavailable()
    if missing is not None:  # CI sets REQUIRE_TEAM_TESTS: there a missing piece fails
        (pytest.fail if os.environ.get("REQUIRE_TEAM_TESTS") else pytest.skip)(missing)
    root = tmp_path_factory.mktemp("stack")
    started = stack_script("start", root)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        env_files = [root / name for name in team_stack.ENV_FILES.values()]
        assert all(path.stat().st_mode & 0o077 == 0 for path in env_files)  # the owner's alone
        said = started.stdout + started.stderr
        assert f"source {root}/env" in said and f"source {root}/member.env" in said
        assert not any(secret in said for path in env_files for secret in secrets_of(exports(path)))
        yield root
    finally:
        servers = team_stack.load(root) if (root / "stack.json").exists() else None
        stopped = stack_script("stop", root)
    assert stopped.returncode == 0 and not root.exists(), stopped.stderr
    assert servers is not None and not any(map(local_servers.is_alive, servers.pids.values()))
    assert not Path(servers.postgres_data).exists()


@pytest.fixture(scope="module")
def stack(stack_root: Path) -> dict[str, str]:
    """The environment the stack's env file exports: the maintainer's account."""
    return exports(stack_root / "env")


@pytest.fixture(scope="module")
def member(stack_root: Path) -> dict[str, str]:
    """The environment member.env exports: a teammate's account."""
    return exports(stack_root / "member.env")


def stack_script(action: str, root: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO / "src" / "team_stack.py"), action, "--dir", str(root)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def exports(env_file: Path) -> dict[str, str]:
    """What `source env` would set: each line is `export NAME='value'`."""
    pairs = (
        shlex.split(line.removeprefix("export "))[0] for line in env_file.read_text().splitlines()
    )
    return dict(pair.split("=", 1) for pair in pairs)


def secrets_of(env: dict[str, str]) -> list[str]:
    password = env["OPTUNA_STORAGE"].split(":")[2].split("@")[0]
    return [env["MLFLOW_TRACKING_PASSWORD"], env["AWS_SECRET_ACCESS_KEY"], password]


def tracked(env: dict[str, str], password: str | None = None) -> dict[str, str]:
    """The stack's MLflow account (or a wrong password), nothing else of its environment."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    chosen = {name: env[name] for name in names}
    if password is not None:
        chosen["MLFLOW_TRACKING_PASSWORD"] = password
    return chosen


def test_a_pipeline_run_is_tracked_registered_and_stored_through_the_team_server(
    project, mirror, stack, monkeypatch
):
    import boto3

    url = stack["MLFLOW_TRACKING_URI"]
    update_params(project, {"tracking": {"champion_floor": 0.0}})  # tiny data: a weak model
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    said = []
    for stage in ("preprocess", "train", "evaluate"):
        result = run_stage(project, stage, env=tracked(stack))
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
        said += [result.stdout, result.stderr]
    (compared,) = [line for line in said[-2].splitlines() if line.startswith("runs compared")]
    assert compared.startswith(f"runs compared: {url}/#/experiments/")  # the server's page
    assert "View run" not in "".join(said)  # MLflow's own links stay quiet
    digit = project / "digit.png"
    as_user_png(synthetic_digits(1, seed=4)[0][0], digit, (90, 70), dark_on_light=True)
    predicted = run_stage(project, "predict", env=tracked(stack), args=[str(digit)])
    assert predicted.returncode == 0, predicted.stderr[-3000:]  # the champion, from the server
    assert "models:/mnist-cnn@champion (version 1)" in predicted.stdout
    said += [predicted.stdout, predicted.stderr]
    said.append(serve_one_image(project, stack))

    for name, value in tracked(stack).items():
        monkeypatch.setenv(name, value)
    client = mlflow.MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("mnist-cnn").experiment_id])
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "epoch/val_accuracy")) == 1
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    assert champion.run_id == run.info.run_id
    s3 = boto3.client(
        "s3",
        endpoint_url=stack["TEAM_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"],
    )
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=team_stack.BUCKET)["Contents"]]
    assert any(key.endswith("eval/confusion.png") for key in keys)
    assert any(key.endswith("MLmodel") for key in keys)  # the logged model, in S3
    logged = [*run.data.params.values(), *run.data.tags.values()]
    assert not any(secret in text for secret in secrets_of(stack) for text in [*said, *logged])


def test_a_member_logs_runs_while_only_the_maintainer_registers_and_moves_aliases(
    project, mirror, stack, member, monkeypatch
):
    """A member's pipeline run is tracked in full, and evaluate says in one line that the model
    was not registered and who may; the maintainer then registers that run's model as the line
    says; the member may read it but not move its aliases, tag or delete it."""
    update_params(project, {"tracking": {"champion_floor": 0.0}})
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    for stage in ("preprocess", "train", "evaluate"):
        result = run_stage(project, stage, env=tracked(member))
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("not registered")]
    assert (
        f"account member may not register versions of mnist-cnn or move its aliases on "
        f"{stack['MLFLOW_TRACKING_URI']}; its maintainer (maintainer) may" in line
    )
    assert "Traceback" not in result.stderr and member["MLFLOW_TRACKING_PASSWORD"] not in line

    for name, value in tracked(stack).items():
        monkeypatch.setenv(name, value)
    maintainer = mlflow.MlflowClient(stack["MLFLOW_TRACKING_URI"])
    # As evaluate finds it: other tests on this server trained the same bytes before.
    mlflow.set_tracking_uri(stack["MLFLOW_TRACKING_URI"])
    run_id = pipeline_run.training_run(project / "models" / "model.keras")
    run = maintainer.get_run(run_id)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert not maintainer.search_model_versions(f"run_id = '{run_id}'")
    again = run_stage(project, "evaluate", env=tracked(stack))  # what the line tells him to run
    assert again.returncode == 0 and "registered mnist-cnn version" in again.stdout, again.stderr
    (version,) = maintainer.search_model_versions(f"run_id = '{run_id}'")
    assert maintainer.get_registered_model("mnist-cnn").tags == {"maintainer": "maintainer"}

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", member["MLFLOW_TRACKING_PASSWORD"])
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "member")
    client = mlflow.MlflowClient(stack["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("mnist-cnn", "challenger").version == version.version
    refused = (
        lambda: client.set_registered_model_alias("mnist-cnn", "champion", version.version),
        lambda: client.set_model_version_tag("mnist-cnn", version.version, "test_accuracy", "1"),
        lambda: client.delete_model_version("mnist-cnn", version.version),
        lambda: client.delete_registered_model("mnist-cnn"),
    )
    for write in refused:
        with pytest.raises(MlflowException) as err:
            write()
        assert err.value.error_code == "PERMISSION_DENIED"
    said = r"account member may not .* its maintainer \(maintainer\) may$"
    mlflow.set_tracking_uri(stack["MLFLOW_TRACKING_URI"])  # what a stage's store.connect does
    guarded = registry.allowed_to_change("mnist-cnn")  # the guard tune.py --register writes in
    with pytest.raises(registry.NotAllowed, match=said), guarded:
        refused[0]()


def serve_one_image(project: Path, stack: dict[str, str]) -> str:
    """serve.py with the champion from the team's registry answers a request; its stderr."""
    url = closed_port_url()
    server = subprocess.Popen(
        [sys.executable, "src/serve.py", "--port", url.rsplit(":", 1)[1]],
        cwd=project,
        env={**venv_env(), **tracked(stack)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_ready(url, server)
        image = synthetic_digits(1, seed=5)[0].reshape(1, 28, 28).tolist()
        answer = requests.post(f"{url}/invocations", json={"inputs": image}, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["predictions"][0]) == 10
    finally:
        server.terminate()
    return server.communicate(timeout=30)[1]


def test_the_server_turns_away_requests_and_stages_without_its_account(project, mirror, stack):
    url = stack["MLFLOW_TRACKING_URI"]
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    account = (stack["MLFLOW_TRACKING_USERNAME"], stack["MLFLOW_TRACKING_PASSWORD"])
    assert requests.get(search, auth=account, timeout=10).status_code == 200
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    assert run_stage(project, "preprocess").returncode == 0
    result = run_stage(project, "train", env=tracked(stack, password="not-the-password"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"MLflow tracking server {url} requires an account (HTTP 401)" in line
    assert "MLFLOW_TRACKING_USERNAME" in line and "not-the-password" not in line


def test_passwords_in_the_tracking_uri_and_the_study_storage_reach_no_output_file_or_run(
    tune_project, stack
):
    """The account's password inside MLFLOW_TRACKING_URI (MLflow's client and the connect check
    both honour it) and the database's inside $OPTUNA_STORAGE, which params.yaml names: after
    the pipeline, a search and predict, neither is in any output, file, param or tag."""
    account = f"{stack['MLFLOW_TRACKING_USERNAME']}:{stack['MLFLOW_TRACKING_PASSWORD']}"
    server = stack["MLFLOW_TRACKING_URI"]
    uri = server.replace("http://", f"http://{account}@", 1)
    env = {"MLFLOW_TRACKING_URI": uri, "OPTUNA_STORAGE": stack["OPTUNA_STORAGE"]}
    update_params(tune_project, {"tracking": {"champion_floor": 0.0}})
    set_tune(tune_project, storage="${OPTUNA_STORAGE}", n_trials=1, study="planted")
    said = []
    for stage, args in (("train", []), ("evaluate", []), ("tune", [])):
        result = run_stage(tune_project, stage, env=env, args=args)
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
        said += [result.stdout, result.stderr]
    digit = tune_project / "digit.png"
    as_user_png(synthetic_digits(1, seed=4)[0][0], digit, (90, 70), dark_on_light=True)
    predicted = run_stage(tune_project, "predict", env=env, args=[str(digit)])
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    said += [predicted.stdout, predicted.stderr]
    assert f" in {uri.replace(stack['MLFLOW_TRACKING_PASSWORD'], '***')}\n" in said[0]

    planted = [stack["MLFLOW_TRACKING_PASSWORD"], secrets_of(stack)[2]]  # the database's last
    files = [path for path in tune_project.rglob("*") if path.is_file() and not path.is_symlink()]
    leaks = [str(path) for path in files if any(s.encode() in path.read_bytes() for s in planted)]
    assert not leaks, leaks
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist-cnn").experiment_id])
    assert len(runs) >= 3  # the pipeline's, the study's and its trial's
    logged = [str(v) for r in runs for v in (*r.data.params.values(), *r.data.tags.values())]
    assert not any(secret in text for secret in planted for text in [*said, *logged])
    pipeline = next(r for r in runs if "tune.storage" in r.data.params)
    assert pipeline.data.params["tune.storage"] == "${OPTUNA_STORAGE}"


def test_a_training_run_rides_out_a_restart_of_the_tracking_server(
    project, mirror, stack_root, stack, monkeypatch
):
    update_params(project, {"train": {"epochs": 20}})
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    assert run_stage(project, "preprocess").returncode == 0
    env = {**os.environ, **tracked(stack), "PYTHONUNBUFFERED": "1"}
    train = subprocess.Popen(
        [sys.executable, "src/train.py"],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = iter(train.stdout.readline, "")
    said = list(itertools.takewhile(lambda line: not line.startswith("Epoch 2/"), lines))
    local_servers.stop(team_stack.load(stack_root).pids["mlflow"])  # epoch 1 is logged
    assert train.poll() is None, "".join(said)  # the server went away mid-run
    restarted = stack_script("start", stack_root)
    assert "MLflow server restarted" in restarted.stdout, restarted.stderr[-3000:]
    out, _ = train.communicate(timeout=600)
    assert train.returncode == 0, "".join(said) + out

    run_id = next(line.split()[2] for line in said if line.startswith("MLflow run "))
    for name, value in tracked(stack).items():
        monkeypatch.setenv(name, value)
    client = mlflow.MlflowClient(stack["MLFLOW_TRACKING_URI"])
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "epoch/val_accuracy")) == 20


def test_four_workers_share_a_postgres_study_and_a_killed_ones_trial_is_retried_once(
    tune_project, stack
):
    postgres_url = stack["OPTUNA_STORAGE"]
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

    password = secrets_of(stack)[2]
    assert not any(password in text for text in said)
    logged = [str(v) for r in runs for v in (*r.data.params.values(), *r.data.tags.values())]
    assert not any(password in value for value in logged)
    (study_run,) = [r for r in runs if "optuna_study" in r.data.tags]
    assert study_run.data.tags["optuna_storage"] == postgres_url.replace(password, "***")


def test_teammates_share_data_models_and_queued_experiments_through_the_dvc_remote(
    project, mirror, stack, monkeypatch, tmp_path
):
    """Alice runs the pipeline and pushes; Bob's fresh clone pulls the same bytes. Alice queues
    two experiments, run two at a time and tracked on the server, and pushes one; Bob pulls it.
    The remote's address is committed; its endpoint and credentials are not."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", *tracked(stack)):
        monkeypatch.setenv(name, stack[name])
    endpoint = stack["TEAM_S3_ENDPOINT"]
    update_params(project, {"tracking": {"champion_floor": 0.0}})
    alice, origin, bob = project, tmp_path / "origin.git", tmp_path / "bob"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(alice, "init", "-q")
    git(alice, "remote", "add", "origin", str(origin))
    dvc(alice, "init", "-q")
    dvc(alice, "remote", "add", "-d", "team", f"s3://{team_stack.BUCKET}/dvc")
    dvc(alice, "remote", "modify", "--local", "team", "endpointurl", endpoint)
    # The synthetic digits are not the published MNIST that fetch verifies: they stand in for
    # fetch's output, recorded as if fetched, and the rest of the pipeline runs for real.
    shutil.copytree(mirror[0], alice / "data" / "raw")
    dvc(alice, "commit", "-f", "fetch")
    dvc(alice, "repro")
    git(alice, "add", "-A")
    git(alice, "commit", "-qm", "a trained model")
    git(alice, "push", "-q", "origin", "HEAD:main")
    dvc(alice, "push")

    git(tmp_path, "clone", "-q", "-b", "main", str(origin), str(bob))
    assert endpoint not in (bob / ".dvc" / "config").read_text()  # not committed
    dvc(bob, "remote", "modify", "--local", "team", "endpointurl", endpoint)
    dvc(bob, "pull")
    for path in ("data/raw", "data/processed", "models/model.keras"):
        assert digests(bob / path) == digests(alice / path), path

    rates = {"lr-low": "0.002", "lr-high": "0.003"}  # params.yaml: 0.004
    for name, rate in rates.items():
        dvc(alice, "exp", "run", "--queue", "--name", name, "-S", f"train.learning_rate={rate}")
    start_queue(alice, jobs=2)
    try:
        wait_for_experiments(alice, rates)
    finally:
        stop_queue(alice)
    client = mlflow.MlflowClient(stack["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("mnist-cnn").experiment_id])
    queued = {r.info.run_name: r for r in runs if r.info.run_name in rates}
    assert {name: r.data.params["train.learning_rate"] for name, r in queued.items()} == rates
    assert {r.info.status for r in queued.values()} == {"FINISHED"}

    dvc(alice, "exp", "push", "origin", "lr-high")
    dvc(bob, "exp", "pull", "origin", "lr-high")
    for clone in (alice, bob):
        dvc(clone, "exp", "apply", "lr-high")
    assert digests(bob / "models/model.keras") == digests(alice / "models/model.keras")
    assert "learning_rate: 0.003" in (bob / "params.yaml").read_text()


def digests(path: Path) -> dict[str, str]:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {
        str(item.relative_to(path.parent)): hashlib.sha256(item.read_bytes()).hexdigest()
        for item in files
        if item.is_file()
    }
