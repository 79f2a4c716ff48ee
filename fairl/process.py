"""Process plumbing shared by the CLI, the UI and study workers: signals, parent death."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import signal
import threading


class _Interrupts:
    """Where a stop signal may raise KeyboardInterrupt (the innermost `interrupts` block says)
    and the one that arrived where it may not, to raise when the code comes back to a block
    where it may."""

    def __init__(self) -> None:
        self.allowed: list[bool] = [True]
        self.pending = False
        self.received = False  # a stop signal came (until its handler is taken down)

    def raise_pending(self) -> None:
        if self.pending and self.allowed[-1]:
            self.pending = False
            raise KeyboardInterrupt


_INTERRUPTS = _Interrupts()


@contextlib.contextmanager
def interrupts(allowed: bool):
    """Within the block a stop signal taken by `interrupt_on_sigterm` raises KeyboardInterrupt
    (allowed) or waits (not allowed) until the code is back where one may: a block of
    bookkeeping (reaping, counting, Optuna's ask and tell) is never cut midway, and a trial's
    own code is, where its except clause re-queues it. A signal that waited is raised on
    entering an allowed block or on leaving the last disallowed one. Only the main thread,
    which alone takes signals, keeps the blocks (elsewhere, as Optuna's heartbeat thread, a
    block does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _INTERRUPTS.allowed.append(allowed)
    try:
        _INTERRUPTS.raise_pending()
        yield
    finally:
        _INTERRUPTS.allowed.pop()
    _INTERRUPTS.raise_pending()  # not from `finally`: an error in flight is not replaced


def stop_pending() -> bool:
    """Did a stop signal arrive inside `interrupts(False)`, to raise when the block ends?"""
    return _INTERRUPTS.pending


def stopping() -> bool:
    """Did a stop signal (Ctrl-C, SIGTERM) arrive? The process is then on its way out: a
    wait for an unreachable store (fairl.outage) ends at once."""
    return _INTERRUPTS.received


@contextlib.contextmanager
def interrupt_on_sigterm(sigint: bool = False):
    """SIGTERM (and SIGINT with `sigint`) raises KeyboardInterrupt, as Ctrl-C does (the
    running trial is re-queued, its run KILLED), or waits inside `interrupts(False)`; yields
    the list of signals received. Later signals wait for the cleanup."""
    received: list[int] = []

    def stop(signum, _frame):
        if not received:
            received.append(signum)
            _INTERRUPTS.received = _INTERRUPTS.pending = True
            _INTERRUPTS.raise_pending()

    # SIGINT ignored at start (a shell's background job) stays ignored.
    numbers = [signal.SIGTERM] + ([signal.SIGINT] if sigint and
                                  signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else [])
    previous = {number: signal.signal(number, stop) for number in numbers}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _INTERRUPTS.pending = _INTERRUPTS.received = False


def die_with_parent() -> None:
    """Linux: get SIGKILL when the launcher dies, so no worker outlives a killed launch."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def skip_exit_collection() -> None:
    """Every object alive now leaves the collector's view (gc.freeze), so the collections
    the interpreter runs as it exits skip them; call it as a process ends. A study launch
    ends holding millions of objects (torch, mlflow, sqlalchemy, the world's arrays), and
    that last collection alone took ~2.8 s of its exit. The memory goes back to the OS as
    ever. What only that collection would have closed (a SQLite connection held in a
    reference cycle) is left to the OS: every commit is in the database or its WAL, which the
    next connection reads (and SQLite checkpoints every 1 000 pages), as after a kill."""
    gc.freeze()
