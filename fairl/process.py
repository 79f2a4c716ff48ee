"""Process plumbing shared by the CLI, the UI and study workers: signals, parent death."""

from __future__ import annotations

import contextlib
import ctypes
import signal


@contextlib.contextmanager
def interrupt_on_sigterm():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (the running trial is re-queued, its
    run KILLED); yields the list of signals received. Later signals wait for the cleanup."""
    received: list[int] = []

    def stop(signum, _frame):
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent() -> None:
    """Linux: get SIGKILL when the launcher dies, so no worker outlives a killed launch."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
