"""Shared fixtures: tiny synthetic MNIST, a local HTTP mirror, and a scratch copy of the project."""

from __future__ import annotations

import functools
import http.server
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

from common import bootstrap
from ml import data
from mnist_fakes import synthetic_splits, write_raw
from team.local_servers import free_port
from tracking import store

REPO = Path(__file__).resolve().parent.parent
# Real MNIST for the predict and slow tests: $MNIST_MIRROR when it names a local directory (the
# README's way), else ../shared/mnist beside the repo (CI's layout).
_MIRROR = os.environ.get("MNIST_MIRROR", "")
_BESIDE = REPO.parent / "shared" / "mnist"
SHARED_MNIST = Path(_MIRROR).resolve() if _MIRROR and Path(_MIRROR).is_dir() else _BESIDE

os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# What the entry scripts give the libraries before they load (oneDNN kernels among them), so a
# test that trains in this process computes as `dvc repro` does.
bootstrap.library_environment()


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test logs to its own sqlite MLflow store, never to the repo's mlflow.db: in this
    process (connected here, so no test inherits the last test's store) and in subprocesses."""
    # Imported here, not at the top: pytest-xdist's controller runs no test and should not load
    # TensorFlow, whose start-up lines would end up in the test report.
    from mlflow.tracking import fluent

    uri = f"sqlite:///{tmp_path / 'mlruns-store' / 'mlflow.db'}"
    (tmp_path / "mlruns-store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    store.connect(uri)
    yield uri
    # mlflow.set_experiment exports the id for subprocesses: left set, it would send the next
    # test's runs into this test's experiment id (and `mlflow run` refuses it beside a name).
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    # ...and in this process: MLflow refuses to resume a run of another experiment than the
    # active one, and has no public call that forgets it.
    fluent._active_experiment_id = None


@pytest.fixture(scope="session")
def tiny_splits() -> data.Splits:
    """300 synthetic digits, 250 to train on and 50 to validate: a few seconds per fit."""
    return synthetic_splits(300, seed=5, val=50)


@pytest.fixture(scope="session")
def device():
    """The CPU as the stages configure it (deterministic ops), once per test process."""
    from ml import runtime  # imports Keras: only the tests that train pay for it

    return runtime.configure()


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A directory holding the four synthetic .gz files, and their decompressed digests."""
    directory = tmp_path / "mirror"
    return directory, write_raw(directory)


@contextmanager
def serving(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` over HTTP on 127.0.0.1 in a thread; yield the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def http_mirror(mirror: tuple[Path, dict[str, str]]) -> Iterator[str]:
    """Serve the synthetic mirror over HTTP on 127.0.0.1; yield its base URL."""
    with serving(functools.partial(QuietHandler, directory=str(mirror[0]))) as url:
        yield url


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def closed_port_url() -> str:
    """A loopback URL on which nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch copy of the project (code, params, pipeline) shrunk to tiny-data settings."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "dvc.yaml", "data/feedback/README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    update_params(
        root,
        {
            "preprocess": {"val_size": 50},
            "train": {"epochs": 1, "batch_size": 32},
            "evaluate": {"gallery_size": 5},
        },
    )
    return root


def update_params(root: Path, changes: dict) -> None:
    """Merge `changes` (nested dicts) into root/params.yaml."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())

    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict):
                merge(into.setdefault(key, {}), value)
            else:
                into[key] = value

    merge(params, changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(
    root: Path, stage: str, env: dict[str, str] | None = None, args: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python src/<stage>.py [args]` in `root` as a user would; capture its output."""
    return subprocess.run(
        [sys.executable, f"src/{stage}.py", *(args or [])],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )


def venv_env() -> dict[str, str]:
    """This environment with the venv's bin first on PATH, as `uv run` gives a user: the
    `python` and `mlflow` that DVC stages and MLflow projects start are the venv's."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run_in_venv(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`command` in `cwd` with the venv first on PATH, its output captured, waited for at most
    `timeout` seconds."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- tuning: a scratch project ready for tune.py (test_tune, test_team) ---

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
    (project / "data").mkdir(exist_ok=True)
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


# --- serving: src/serve.py as a real process on 127.0.0.1 (test_serving, test_page) ---

SERVE_PY = str(REPO / "src" / "serve.py")


def register_tiny_model(folder: Path, name: str = "digits") -> str:
    """A sqlite tracking store in `folder` with a small untrained CNN as `name@champion`."""
    import mlflow
    import numpy as np

    from ml import config, model
    from tracking import models, registry

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    store.connect(uri)
    mlflow.set_experiment("serving")
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=4)], dense=[16]))
    sample = np.zeros((1, 28, 28, 1), np.uint8)
    with mlflow.start_run():
        version = models.log_and_register(cnn, sample, name)
        registry.apply_registry_policy(name, version, 0.995, floor=0.99)
    return uri


@contextmanager
def running(command: list[str], tracking_uri: str, cwd: Path | None = None) -> Iterator[str]:
    """Start a model server (its command with "{port}" in it) and yield its URL once it answers
    /ping; stop it after. A server that fails to start fails the test with its last words."""
    url = closed_port_url()
    port = url.rsplit(":", 1)[1]
    process = subprocess.Popen(
        [part.replace("{port}", port) for part in command],
        cwd=cwd,
        env={**venv_env(), "MLFLOW_TRACKING_URI": tracking_uri},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_ready(url: str, process: subprocess.Popen) -> None:
    """Until the server answers /ping; if it fails to, the test fails with its last words."""
    from common.errors import PipelineError
    from team import local_servers

    try:
        local_servers.wait_until_up(process, f"{url}/ping", "the model server")
    except PipelineError as err:
        said = process.stderr.read()[-2000:] if process.poll() is not None else ""
        pytest.fail(f"{err}: {said}")


# --- pages: real headless Chromium (Debian's `chromium`) driven by Playwright ---

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """A headless Chromium; skipped, saying how to get one, where the machine has none (CI sets
    REQUIRE_BROWSER_TESTS: there a missing browser fails)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        missing = f"needs Chromium at {CHROMIUM} (`apt-get install chromium`, or set $CHROMIUM)"
        (pytest.fail if os.environ.get("REQUIRE_BROWSER_TESTS") else pytest.skip)(missing)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def draw_strokes(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw on the page's pad with the mouse; points are fractions of the pad's width/height."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=8)
        page.mouse.up()


# A 7 as many write it: the bar, then (the pen lifted) the stem.
SEVEN_STROKES = [[(0.25, 0.2), (0.75, 0.2)], [(0.72, 0.24), (0.45, 0.85)]]


# --- DVC: real repos and the experiments queue (test_team, test_feedback, test_dvc_queue) ---

DVC_LIMIT_S = 900  # the longest one dvc command (or the queued experiments) may take here
POLL_S = 2.0  # how often the queue's status is read while its experiments run


def git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


def dvc(root: Path, *args: str) -> str:
    command = ["dvc", *args]
    try:
        result = run_in_venv([sys.executable, "-m", *command], root, DVC_LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{shlex.join(command)}` in {root} still running after {DVC_LIMIT_S} s")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def start_queue(root: Path, jobs: int) -> None:
    """`dvc queue start -j JOBS`. Its output goes to a file, not a pipe: the daemon it leaves
    behind keeps the descriptors, and a pipe would stay open, so the call would not return,
    until the last worker exits (with a hung worker, never)."""
    with tempfile.TemporaryFile("w+") as said:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
            cwd=root,
            env=venv_env(),
            stdout=said,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=DVC_LIMIT_S,
            check=False,
        )
        said.seek(0)
        assert result.returncode == 0, said.read()[-2000:]


def wait_for_experiments(
    root: Path,
    names: Iterable[str],
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Until `dvc queue status` says each named experiment succeeded. Not until the queue's
    workers exit: under load one may never do (its monitor thread dies on a JSONDecodeError
    reading the filesystem broker, a race inside dvc-task), and its experiment is done anyway."""
    wanted, deadline = set(names), clock() + DVC_LIMIT_S
    while True:
        status = dvc(root, "queue", "status")
        rows = [line.split() for line in status.splitlines()]
        states = {row[1]: row[-1] for row in rows if len(row) > 2 and row[1] in wanted}
        if {name for name, state in states.items() if state in ("Success", "Failed")} == wanted:
            break
        if clock() > deadline:
            pytest.fail(f"queued {sorted(wanted)} not done in {DVC_LIMIT_S} s:\n{status}")
        pause(POLL_S)
    assert set(states.values()) == {"Success"}, status


def stop_queue(root: Path) -> list[str]:
    """`dvc queue stop --kill`, then every process still running in the repo or below it is
    ended: a worker that never exits, and the stage a frozen worker was running, which the kill
    orphans. None may outlive the test. Returns the command lines of those ended."""
    dvc(root, "queue", "stop", "--kill")
    left = [process for process in psutil.process_iter(["cmdline", "cwd"]) if inside(process, root)]
    for process in left:
        process.kill()  # a frozen (SIGSTOPped) process ignores SIGTERM until it is continued
    assert not psutil.wait_procs(left, timeout=30)[1]
    return [" ".join(process.info["cmdline"] or []) for process in left]


def inside(process: psutil.Process, root: Path) -> bool:
    cwd = process.info["cwd"]
    return process.pid != os.getpid() and cwd is not None and Path(cwd).is_relative_to(root)


# --- faults: a nearly full file system (test_faults, test_feedback) ---


@contextmanager
def room_for(folder: Path, spare: int) -> Iterator[None]:
    """`folder`, with what it holds, on a file system with `spare` bytes free: a small tmpfs
    mounted over it, which needs root (CI and the development machines run as root)."""
    held = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root; CI runs as root")
    saved = folder.with_name(folder.name + ".saved")
    shutil.copytree(folder, saved)
    size = held + spare
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], check=True)
    try:
        shutil.copytree(saved, folder, dirs_exist_ok=True)
        yield
    finally:
        subprocess.run(["umount", folder], check=True)
        shutil.rmtree(folder)
        saved.rename(folder)
