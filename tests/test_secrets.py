"""Secrets never leave the process: URIs are printed without passwords, params.yaml refuses
one, files that travel hold none, and a library's line on stderr quoting one is hidden.

The team tests (test_team.py) plant a password in a real MLflow server's URI and a real
PostgreSQL URL and look for it in every output, file, param and tag."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest

from common import redact
from common.errors import PipelineError
from conftest import REPO, run_stage, update_params, venv_env
from ml import config
from tracking import pipeline_run
from tuning import storage

PLANTED = "Pl4nted-s3cret"


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://bob:s3cret@db:5432/optuna", "postgresql://bob:***@db:5432/optuna"),
        ("http://admin:p%40ss@127.0.0.1:5000", "http://admin:***@127.0.0.1:5000"),
        (
            "postgresql://bob@db/optuna?password=s3cret&sslmode=require",
            "postgresql://bob@db/optuna?password=***&sslmode=require",
        ),
        ("postgresql://db/optuna?sslmode=require", "postgresql://db/optuna?sslmode=require"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_a_uri_is_shown_without_its_password(given, shown):
    assert redact.uri(given) == shown
    assert redact.has_secret(given) == (given != shown)


def test_text_hides_urls_with_passwords_and_the_secrets_of_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PLANTED)
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://team:db-Pass_9@127.0.0.1:5432/optuna")
    message = (
        f"API request to http://admin:other-pass@host:5000/api failed; account {PLANTED}; "
        "postgres said: password authentication failed (db-Pass_9); ?password=zz9 kept? no"
    )
    hidden = redact.text(message)
    for secret in ("other-pass", PLANTED, "db-Pass_9", "zz9"):
        assert secret not in hidden
    assert "http://admin:***@host:5000/api" in hidden and "account ***" in hidden


def test_params_yaml_refuses_a_storage_password_and_names_the_variable_way(project):
    update_params(project, {"tune": {"storage": f"postgresql://team:{PLANTED}@db/optuna"}})
    with pytest.raises(config.ParamsError) as err:
        config.load(project / "params.yaml")
    assert "tune.storage holds a password" in str(err.value)
    assert "storage: ${OPTUNA_STORAGE}" in str(err.value) and PLANTED not in str(err.value)


def test_dvc_exp_run_s_cannot_write_a_storage_password_either():
    with pytest.raises(config.ParamsError, match=r"tune\.storage holds a password"):
        config.load(overrides=[f"tune.storage=postgresql://u:{PLANTED}@db/optuna"])


def test_tune_py_s_storage_flag_may_carry_one_for_this_run_only():
    url = f"postgresql://u:{PLANTED}@db/optuna"
    assert config.load(values={"tune.storage": url}).tune.storage == url


def test_the_storage_may_name_the_variable_holding_its_url(monkeypatch):
    monkeypatch.setenv("TEAM_STUDIES", "sqlite:////tmp/studies.db")
    assert storage.resolved("${TEAM_STUDIES}") == "sqlite:////tmp/studies.db"
    assert storage.resolved("sqlite:///x.db") == "sqlite:///x.db"
    assert storage.resolved(None) is None
    monkeypatch.delenv("TEAM_STUDIES")
    with pytest.raises(PipelineError, match=r"names \$TEAM_STUDIES, which is not set"):
        storage.resolved("${TEAM_STUDIES}")


def test_a_run_logs_the_variable_s_name_not_its_url(monkeypatch):
    monkeypatch.setenv("OPTUNA_STORAGE", f"postgresql://u:{PLANTED}@db/optuna")
    params = config.load(overrides=["tune.storage=${OPTUNA_STORAGE}"])
    with pipeline_run.pipeline_run(params, {}) as run_id:
        pass
    logged = mlflow.get_run(run_id).data.params
    assert logged["tune.storage"] == "${OPTUNA_STORAGE}"


def test_a_flag_s_password_is_hidden_in_the_logged_params():
    params = config.load(values={"tune.storage": f"postgresql://u:{PLANTED}@db/optuna"})
    with pipeline_run.pipeline_run(params, {}) as run_id:
        pass
    assert mlflow.get_run(run_id).data.params["tune.storage"] == ("postgresql://u:***@db/optuna")


def test_a_secret_a_library_writes_to_stderr_is_hidden_there():
    """What the bootstrap's stderr filter copies: a log line, a traceback, all of fd 2."""
    code = f"""
import os, sys
sys.path.insert(0, {str(REPO / "src")!r})
from common import bootstrap
bootstrap.start("__main__")
os.write(2, b"urllib3: connection to http://admin:{PLANTED}@127.0.0.1:9 refused\\n")
raise RuntimeError("account password " + os.environ["MLFLOW_TRACKING_PASSWORD"])
"""
    env = venv_env() | {"MLFLOW_TRACKING_PASSWORD": PLANTED}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1 and PLANTED not in result.stderr
    assert "http://admin:***@127.0.0.1:9 refused" in result.stderr
    assert result.stderr.splitlines()[-1] == "RuntimeError: account password ***"


def test_a_stage_s_error_line_hides_the_password_of_the_store_it_names(project):
    uri = f"http://admin:{PLANTED}@127.0.0.1:9"  # nothing listens on port 9
    result = run_stage(project, "tune", env={"MLFLOW_TRACKING_URI": uri})  # connects first
    assert result.returncode == 1 and PLANTED not in result.stdout + result.stderr
    assert "http://admin:***@127.0.0.1:9 does not answer" in result.stderr
