"""The store watchdog: a call retried while its store does not answer, said so, up to a deadline.

The calls here fail with the errors a closed port really gives (connection refused); the
owners' classifiers are tested on real MLflow and database errors in tests/runs/test_watch.py
and tests/study/test_storage.py, the whole path on a real server in tests/study/test_outages.py.
"""

from __future__ import annotations

import socket

import pytest

from fairl import outage
from fairl.config import ConfigError


def refused() -> None:
    """Connect to a port nobody listens on: ConnectionRefusedError, as from a stopped server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


def why(error: BaseException) -> str | None:
    return "Connection refused" if isinstance(error, ConnectionRefusedError) else None


def test_an_outage_is_waited_out_and_said(monkeypatch, capsys):
    monkeypatch.setenv(outage.TIMEOUT_VARIABLE, "30")
    tries = []

    def call() -> str:
        tries.append(1)
        if len(tries) < 3:
            refused()
        return "done"

    outage.set_task("trial 7 of test")
    try:
        assert outage.wait_out("store A", call, why) == "done"
    finally:
        outage.set_task(None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines  # one line at once (the next only after 30 s), one when back
    assert lines[0].startswith("fairl: store A unreachable since ") and "Connection refused" \
        in lines[0] and "trial 7 of test waits" in lines[0] and "FAIRL_STORE_TIMEOUT=30" \
        in lines[0], lines
    assert lines[1].startswith("fairl: store A answers again after") and "trial 7" in lines[1]
    assert outage.recovered_within("store A", 60)  # (no heartbeat is judged stale yet)


def test_past_the_deadline_it_gives_up_then_tries_once(monkeypatch, capsys):
    monkeypatch.setenv(outage.TIMEOUT_VARIABLE, "1")
    with pytest.raises(outage.StoreUnreachable) as error:
        outage.wait_out("store B", refused, why)
    message = str(error.value)
    assert message.startswith("store B unreachable for 1 s") and "FAIRL_STORE_TIMEOUT=1" \
        in message and "\n" not in message, message
    tries = []

    def counted() -> None:
        tries.append(1)
        refused()

    with pytest.raises(outage.StoreUnreachable, match="store B still unreachable"):
        outage.wait_out("store B", counted, why)  # the launch's cleanup: no second wait
    for _ in range(2):  # a wait inside a wait (Optuna's calls nest) leaves the store given up
        with pytest.raises(outage.StoreUnreachable, match="store B still unreachable"):
            outage.wait_out("store B", lambda: outage.wait_out("store B", counted, why), why)
    assert tries == [1, 1, 1]
    assert outage.wait_out("store B", lambda: 5, why) == 5  # it answers: waited for again
    tries.clear()

    def once_more() -> str:
        tries.append(1)
        if len(tries) == 1:
            refused()
        return "back"

    assert outage.wait_out("store B", once_more, why) == "back" and len(tries) == 2
    with pytest.raises(ZeroDivisionError):  # a real error is raised at once, never retried
        outage.wait_out("store B", lambda: 1 / 0, why)


def test_a_retry_finds_what_the_lost_try_made(monkeypatch):
    monkeypatch.setenv(outage.TIMEOUT_VARIABLE, "30")
    made = []

    def create() -> str:
        made.append("run")  # the store makes it, then the answer is lost
        refused()

    assert outage.wait_out("store C", create, why, already=lambda: made[0] if made else None) \
        == "run"
    assert made == ["run"]  # found again, not made twice


def test_the_deadline_is_checked(monkeypatch):
    for bad in ("soon", "0", "-5", "inf"):
        monkeypatch.setenv(outage.TIMEOUT_VARIABLE, bad)
        with pytest.raises(ConfigError, match="FAIRL_STORE_TIMEOUT: .* number > 0"):
            outage.store_timeout()
    monkeypatch.delenv(outage.TIMEOUT_VARIABLE)
    assert outage.store_timeout() == outage.DEFAULT_TIMEOUT == 600
