"""The store watchdog: a call on an outside store that does not answer is retried, and said so.

The stores are the MLflow tracking server (and the artifact store behind it) and an Optuna
RDB. Their owners (fairl.runs.watch, fairl.study.storage) tell an unreachable store (refused
or reset connections, timeouts, 5xx answers, a lost database connection) from a real error
(4xx, bad data) and run every call through `wait_out`: while the store does not answer, the
call is retried, with one line on stderr at once and every 30 s (which store, since when,
which task waits), up to FAIRL_STORE_TIMEOUT seconds (default 600) from the outage's start.
Back in time: the call returns and nothing is lost. Not back: StoreUnreachable (a
StoreError, exit 3); the study runner stops the launch and re-queues the waiting trial, as
for a disk error. The store is then `down` in this process: later calls on it are tried
once, without waiting (the launch's cleanup), until one succeeds. A stop signal (Ctrl-C,
SIGTERM) ends a wait at once, the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from fairl.config import ConfigError
from fairl.paths import StoreError
from fairl.process import stopping

TIMEOUT_VARIABLE = "FAIRL_STORE_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
REPORT_SECONDS = 30.0  # a line while a store stays unreachable
MAX_PAUSE = 5.0  # seconds between tries, at most

T = TypeVar("T")


class StoreUnreachable(StoreError):
    """A store did not answer within FAIRL_STORE_TIMEOUT (or a stop signal ended the wait)."""

    def __init__(self, store: str, message: str):
        super().__init__(message)
        self.store = store


def store_timeout() -> float:
    """FAIRL_STORE_TIMEOUT in seconds (default 600); ConfigError naming it if it is no number > 0."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{TIMEOUT_VARIABLE}: seconds to wait for an unreachable store, a "
                          f"number > 0 (got {text!r})")
    return seconds


def set_store_timeout(seconds: float) -> None:
    """Set the deadline for this process and the workers it starts (they inherit the variable)."""
    os.environ[TIMEOUT_VARIABLE] = f"{seconds:g}"
    store_timeout()  # validated here, at the edge


@dataclasses.dataclass
class _Outage:
    since: float  # wall clock, for the lines
    started: float  # monotonic, for the deadline
    reported: float | None = None  # monotonic time of the last line


_LOCK = threading.Lock()  # the main thread and Optuna's heartbeat thread share the records
_OUTAGES: dict[str, _Outage] = {}
_DOWN: set[str] = set()
_RECOVERED: dict[str, float] = {}  # store -> monotonic time its last outage here ended
_TASK: list[str | None] = [None]
_STOPPED = [False]  # stop_waiting(): every store is tried once from now on


def set_task(label: str | None) -> None:
    """Name what waits when a store does not answer (e.g. `trial 3 of main_table`)."""
    _TASK[0] = label


def wait_out(store: str, call: Callable[[], T], unreachable: Callable[[BaseException], str | None],
             already: Callable[[], T | None] | None = None) -> T:
    """`call()`, retried while `unreachable(error)` says why the store did not answer.

    `already()` (if given) runs before each retry: a result it returns means the failed try
    went in after all (its answer was lost), and is used instead of trying again, so a retried
    create never makes two. Any other error is raised at once."""
    tries = 0
    while True:
        try:
            result = already() if tries and already is not None else None
            if result is None:
                result = call()
        except Exception as error:
            why = unreachable(error)
            if why is None:
                if given_up(error) is None:  # the store answered, with an error of its own
                    _answered(store)
                raise
            tries += 1
            _wait(store, why, tries, error)
            continue
        _answered(store)
        return result


def _wait(store: str, why: str, tries: int, error: BaseException) -> None:
    """After a failed try: a line if due, StoreUnreachable past the deadline, else a pause."""
    now, deadline = time.monotonic(), store_timeout()
    with _LOCK:
        outage = _OUTAGES.setdefault(store, _Outage(time.time(), now))
        waited = now - outage.started
        was_down = store in _DOWN or _STOPPED[0]
        give_up = was_down or waited >= deadline or stopping()
        if give_up:
            _DOWN.add(store)
            _OUTAGES.pop(store, None)
        line = None
        if not give_up and (outage.reported is None or now - outage.reported >= REPORT_SECONDS):
            outage.reported = now
            line = (f"fairl: {store} unreachable since {_clock(outage.since)} ({waited:.0f} s: "
                    f"{why}); {_TASK[0] or 'the launch'} waits, retrying until "
                    f"{_clock(outage.since + deadline)} ({TIMEOUT_VARIABLE}={deadline:g})")
    if give_up:
        if was_down:
            raise StoreUnreachable(store, f"{store} still unreachable: {why}") from error
        reason = (f"{TIMEOUT_VARIABLE}={deadline:g}" if waited >= deadline else
                  "a stop signal ended the wait")
        raise StoreUnreachable(store, f"{store} unreachable for {waited:.0f} s (since "
                                      f"{_clock(outage.since)}, {reason}): {why}") from error
    if line:
        _say(line)
    time.sleep(max(0.0, min(MAX_PAUSE, 0.25 * 2 ** tries, deadline - waited)))


def _answered(store: str) -> None:
    if not _OUTAGES and not _DOWN:  # the common case: no outage, no lock taken
        return
    with _LOCK:
        outage = _OUTAGES.pop(store, None)
        _DOWN.discard(store)
        if outage is not None:
            _RECOVERED[store] = time.monotonic()
    if outage is not None and outage.reported is not None:
        _say(f"fairl: {store} answers again after {time.time() - outage.since:.0f} s; "
             f"{_TASK[0] or 'the launch'} goes on")


def stop_waiting() -> None:
    """From now on no call waits for a store (a worker gave up on one: the launch stops)."""
    _STOPPED[0] = True


def recovered_within(store: str, seconds: float) -> bool:
    """Is `store` in an outage, or out of one for less than `seconds`, as this process saw it?"""
    with _LOCK:
        if store in _OUTAGES or store in _DOWN:
            return True
        ended = _RECOVERED.get(store)
    return ended is not None and time.monotonic() - ended < seconds


def mark_refused(error: BaseException, store: str) -> None:
    """Record on `error` that `store` raised it: a real error of the store (a refused write),
    not of the configuration a trial ran."""
    try:
        error.fairl_store = store  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__
        pass


def refused_by(error: BaseException) -> str | None:
    """The store that raised `error` or one it came from (mark_refused), else None."""
    for link in chain(error):
        store = getattr(link, "fairl_store", None)
        if store:
            return store
    return None


def given_up(error: BaseException) -> StoreUnreachable | None:
    """The StoreUnreachable that `error` is or came from (a library may wrap it), else None."""
    return next((link for link in chain(error) if isinstance(link, StoreUnreachable)), None)


def chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and every exception it was raised from or while handling, each once."""
    todo, seen = [error], set()
    while todo:
        link = todo.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        todo += [link.__cause__, link.__context__]


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def _say(line: str) -> None:
    from tqdm import tqdm  # the progress bar's module: the line goes above the bar

    tqdm.write(line, file=sys.stderr)
