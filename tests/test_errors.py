"""errors: a signal that arrives inside database code waits until the process is outside it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

import errors


@pytest.fixture
def in_a_statement():
    """Runs `probe` from inside SQLAlchemy executing a statement on a real SQLite database."""

    def run(probe) -> list:
        engine = sqlalchemy.create_engine("sqlite://")
        seen = []
        sqlalchemy.event.listen(
            engine, "before_cursor_execute", lambda *_: seen.append(probe(sys._getframe()))
        )
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        return seen

    return run


def test_database_code_is_recognised_from_any_frame_below_it(in_a_statement):
    assert in_a_statement(errors.in_transaction) == [True]
    assert not errors.in_transaction(sys._getframe())


def test_a_signal_inside_a_transaction_is_sent_again_not_raised(in_a_statement, monkeypatch):
    again = []
    monkeypatch.setattr(errors, "redeliver_later", again.append)
    assert in_a_statement(lambda frame: errors._terminate(signal.SIGTERM, frame)) == [None]
    assert again == [signal.SIGTERM]
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        errors._terminate(signal.SIGTERM, sys._getframe())  # outside: at once


STAGE = """
import os, signal, sqlite3, sys
import sqlalchemy
from errors import exit_on_error

@exit_on_error
def main():
    engine = sqlalchemy.create_engine(f"sqlite:///{sys.argv[1]}")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("create table runs (status text)"))
    signal_once = lambda *_: os.kill(os.getpid(), signal.SIGTERM)
    sqlalchemy.event.listen(engine, "before_cursor_execute", signal_once, once=True)
    with engine.begin() as connection:  # SIGTERM lands as this write starts
        connection.execute(sqlalchemy.text("insert into runs values ('ended')"))
    while True:  # the signal, sent again, ends this
        pass

main()
"""


def test_a_stage_signalled_mid_write_finishes_the_write_then_stops(tmp_path):
    database = tmp_path / "store.db"
    src = str(Path(errors.__file__).parent)
    stage = subprocess.run(
        [sys.executable, "-c", STAGE, str(database)],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stage.returncode == errors.INTERRUPTED, stage.stderr
    assert stage.stderr.startswith("error: interrupted by SIGTERM"), stage.stderr
    with sqlite3.connect(database) as db:
        assert db.execute("select status from runs").fetchall() == [("ended",)]
