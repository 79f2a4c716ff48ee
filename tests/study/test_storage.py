"""fairl.study.storage: a reap that stopped between a FAIL and its re-queue is finished later;
a stop signal in a storage call waits for the call to end; a database away is waited for, a
real database error is not."""

from __future__ import annotations

import os
import signal
import socket

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution

from fairl import outage
from fairl.process import interrupt_on_sigterm, interrupts
from fairl.study.storage import (
    MAX_RETRY,
    open_storage,
    rdb_unreachable,
    reap_trials,
    sqlalchemy_url,
    tally,
)


def _failed_by_a_reap(study, history=()):
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"x": "a"},
        distributions={"x": CategoricalDistribution(["a", "b"])},
        user_attrs={"fairl_killed": "worker h:1:2 died during the trial"},
        system_attrs={"retry_history": list(history)} if history else {})
    study.add_trial(trial)


def test_a_killed_trial_left_unqueued_is_requeued_once():
    study = optuna.create_study()
    _failed_by_a_reap(study)
    assert tally(study.get_trials()).failed == 1
    assert reap_trials(study) == ["trial 0: worker h:1:2 died during the trial; re-queued"]
    counts = tally(study.get_trials())
    assert (counts.failed, counts.requeued, counts.waiting) == (0, 1, 1)
    assert reap_trials(study) == []  # already queued: not again


def test_a_killed_trial_past_max_retry_counts_failed_without_a_message():
    study = optuna.create_study()
    _failed_by_a_reap(study, history=range(100, 100 + MAX_RETRY))
    assert reap_trials(study) == []
    assert tally(study.get_trials()).failed == 1


def test_a_stop_signal_in_the_journal_lock_waits_for_the_write(tmp_path, monkeypatch):
    """SIGTERM lands in Optuna's journal lock release, just after it unlinked the lock file
    (where CI's once did): the write ends whole, the lock is free, then KeyboardInterrupt.
    Before, the lock's own cleanup unlinked the file again: FileNotFoundError, no interrupt."""
    journal = tmp_path / "optuna.journal"
    storage = open_storage(str(journal))
    study = optuna.create_study(study_name="s", storage=storage)
    trial_id = study.ask()._trial_id
    unlink, fired = os.unlink, []

    def unlink_and_term(path, *args, **kwargs):
        unlink(path, *args, **kwargs)
        if str(path).endswith(".rename") and not fired:
            fired.append(path)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "unlink", unlink_and_term)
    with interrupt_on_sigterm(), pytest.raises(KeyboardInterrupt), interrupts(True):
        storage.set_trial_user_attr(trial_id, "mlflow_run_id", "r1")
    assert fired
    assert not (tmp_path / "optuna.journal.lock").exists()  # released, once
    reread = optuna.load_study(study_name="s", storage=open_storage(str(journal)))
    assert reread.trials[0].user_attrs == {"mlflow_run_id": "r1"}


def test_a_database_away_is_waited_for_and_a_real_error_is_not(tmp_path, monkeypatch, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens once the block ends
    url = f"postgresql://fairl@127.0.0.1:{port}/optuna"
    with pytest.raises(sqlalchemy.exc.OperationalError) as away:
        sqlalchemy.create_engine(sqlalchemy_url(url)).connect()
    assert "Connection refused" in rdb_unreachable(away.value)
    monkeypatch.setenv(outage.TIMEOUT_VARIABLE, "2")
    with pytest.raises(outage.StoreUnreachable, match=f"Optuna storage {url} unreachable for 2 s"):
        open_storage(url)  # the schema lock's connection waits, then gives up
    assert "Connection refused" in capsys.readouterr().err
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'optuna.db'}")
    with engine.connect() as connection, pytest.raises(sqlalchemy.exc.OperationalError) as real:
        connection.execute(sqlalchemy.text("SELECT * FROM no_such_table"))
    assert rdb_unreachable(real.value) is None
