"""Team mode on real servers on 127.0.0.1: tuning workers sharing one study in PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator

import optuna
import pytest

import postgres_server
from conftest import TINY_SPACE, run_stage, set_tune
from test_tune import mlflow_runs, start_tune, wait_for_first_epoch

pytestmark = pytest.mark.team
PASSWORD = f"pw-{secrets.token_hex(8)}"  # must never show in output, params or tags


def unavailable() -> str | None:
    if importlib.util.find_spec("psycopg") is None:
        return "no PostgreSQL driver: uv sync --extra team"
    if postgres_server.bin_dir() is None:
        return "no PostgreSQL server: apt-get install postgresql"
    return None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """CI sets REQUIRE_TEAM_TESTS, so there a missing piece fails rather than skips."""
    missing = unavailable()
    if missing is not None:
        if os.environ.get("REQUIRE_TEAM_TESTS"):
            pytest.fail(missing)
        pytest.skip(missing)
    with postgres_server.running(PASSWORD) as url:
        yield url


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
