"""fairl.process: a stop signal raises where a trial may stop and waits out bookkeeping."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from fairl.process import interrupt_on_sigterm, interrupts, stop_pending


def _term_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode boundary


def test_sigterm_raises_where_allowed():
    with interrupt_on_sigterm() as received, pytest.raises(KeyboardInterrupt):
        _term_self()
        for _ in range(1000):
            pass
    assert received == [signal.SIGTERM]


def test_sigterm_waits_out_a_disallowed_block_then_raises():
    steps = []
    with interrupt_on_sigterm() as received, pytest.raises(KeyboardInterrupt):
        with interrupts(False):
            _term_self()
            steps.append("after the signal")
            assert stop_pending()
            steps.append("block end")
        steps.append("never: raised as the block ended")
    assert steps == ["after the signal", "block end"] and received == [signal.SIGTERM]
    assert not stop_pending()


def test_a_waiting_signal_is_raised_on_entering_an_allowed_block():
    reached = []
    with interrupt_on_sigterm(), interrupts(False):
        _term_self()
        with pytest.raises(KeyboardInterrupt), interrupts(True):
            reached.append("inside")  # never: raised on entry
        assert not stop_pending()  # taken: leaving the outer block raises nothing more
    assert reached == []


def test_an_error_in_flight_is_not_replaced_by_a_waiting_signal():
    with interrupt_on_sigterm(), pytest.raises(ValueError), interrupts(False):
        _term_self()
        raise ValueError("the block's own error")


def test_later_signals_wait_for_the_cleanup():
    with interrupt_on_sigterm() as received:
        with pytest.raises(KeyboardInterrupt):
            _term_self()
            for _ in range(1000):
                pass
        _term_self()  # the cleanup goes on
        for _ in range(1000):
            pass
    assert received == [signal.SIGTERM]


def test_sigint_is_taken_only_when_asked_and_not_when_ignored():
    # Python's own Ctrl-C handler first: a suite run as a background job starts with SIGINT
    # ignored, which the last case checks is kept.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.default_int_handler
    with interrupt_on_sigterm():
        assert signal.getsignal(signal.SIGINT) is before
    with interrupt_on_sigterm(sigint=True), interrupts(False):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
        assert stop_pending()  # waits, as SIGTERM does
        with pytest.raises(KeyboardInterrupt), interrupts(True):
            pass
    assert signal.getsignal(signal.SIGINT) is before
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a shell's background job
    try:
        with interrupt_on_sigterm(sigint=True):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_a_block_in_another_thread_leaves_the_main_threads_signal_alone():
    """Optuna's heartbeat thread calls the storage (each call a disallowed block): that must
    neither defer the main thread's signal nor upset its nesting."""
    entered, leave = threading.Event(), threading.Event()

    def storage_call_elsewhere():
        with interrupts(False):
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=storage_call_elsewhere)
    thread.start()
    entered.wait(10)
    try:
        with interrupt_on_sigterm(), pytest.raises(KeyboardInterrupt):
            _term_self()
            for _ in range(1000):
                pass
    finally:
        leave.set()
        thread.join()
    assert not stop_pending()
