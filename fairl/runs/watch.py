"""MLflow under the store watchdog (fairl.outage): which errors mean "the server did not answer".

Every MLflow client call fairl makes goes through a `WatchedClient` (fairl.runs.store.client):
on a tracking server (any non-local URI) a call that meets a refused or reset connection, a
timeout, or a 5xx answer (500, 502-504; the server's database is away: 503) is retried
until FAIRL_STORE_TIMEOUT; a 4xx (bad data, a missing run) is a real error, raised at once
and marked as the store's. MLflow's own HTTP retries are off and its timeout is a tenth of
the deadline (2-120 s), so one call ends within that and the watchdog, not a silent MLflow
backoff (7 retries, ~4 min by default), does the waiting and says so at the first failure.
A local SQLite store is not watched: its errors are the disk's.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from fairl.outage import StoreUnreachable, chain, mark_refused, store_timeout, wait_out
from fairl.paths import redact

T = TypeVar("T")

SERVER_ERRORS = {500, 502, 503, 504}  # HTTP answers of a server that is away or its db
MLFLOW_ERRORS = {"TEMPORARILY_UNAVAILABLE"}  # MLflow's SQL store lost its database


def is_local(uri: str) -> bool:
    """A SQLite file or a local folder: no server to wait for."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def store_name(uri: str) -> str:
    """How the lines name the store: `MLflow tracking server http://host:5000`."""
    kind = "tracking server" if uri.startswith(("http://", "https://")) else "store"
    return f"MLflow {kind} {redact(uri)}"


def http_settings(deadline: float) -> dict[str, str]:
    """MLflow's HTTP timeout and retries for a deadline (its env variables, all integers)."""
    return {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(2, min(120, deadline / 10)))),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # the watchdog retries, and says so
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}


def unreachable(error: BaseException) -> str | None:
    """Why the MLflow server did not answer (a short reason), or None for a real error."""
    import requests  # with mlflow, loaded by then
    from mlflow.exceptions import MlflowException, RestException

    for link in chain(error):
        if isinstance(link, StoreUnreachable):
            return None  # a wait that already gave up: not to be waited out again
        if isinstance(link, requests.exceptions.RetryError):
            found = re.search(r"too many (\d+) error responses", str(link))
            return f"HTTP {found.group(1)} answers" if found else "HTTP error answers"
        if isinstance(link, requests.exceptions.HTTPError) and link.response is not None \
                and link.response.status_code in SERVER_ERRORS:
            return f"HTTP {link.response.status_code}"
        if isinstance(link, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                             ConnectionError, TimeoutError)):
            return _transport_reason(link)
        if isinstance(link, RestException) and link.get_http_status_code() in SERVER_ERRORS:
            return f"HTTP {link.get_http_status_code()} {link.error_code}"
        if isinstance(link, MlflowException) and link.error_code in MLFLOW_ERRORS:
            return link.error_code
    return None


def _transport_reason(error: BaseException) -> str:
    """`Connection refused`, `Read timed out`, ... from a requests/urllib3 message."""
    text = str(error)
    for pattern in (r"\[Errno -?\d+\] ([^'\")\]]+)", r"(Read timed out)", r"(Connection aborted)",
                    r"(Remote end closed connection[^'\")]*)", r"(timed out)"):
        if found := re.search(pattern, text):
            return found.group(1).strip().rstrip(".")
    return type(error).__name__


class WatchedClient:
    """An MlflowClient whose every public call waits out an outage of its server.

    `raw` is the MlflowClient itself, for calls that need `wait_out` with an `already` check
    (a create retried after its first try went in: fairl.runs.write)."""

    def __init__(self, raw, uri: str):
        self.raw, self.uri = raw, uri
        self.store = None if is_local(uri) else store_name(uri)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.raw, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def watched(*args, **kwargs):
            return self.wait_out(lambda: attribute(*args, **kwargs))

        return watched

    def wait_out(self, call: Callable[[], T], already: Callable[[], T | None] | None = None) -> T:
        """`call()` through fairl.outage.wait_out (directly on a local store); an error of
        MLflow's is marked as the store's (fairl.outage.refused_by)."""
        from mlflow.exceptions import MlflowException  # with the client, loaded by then

        try:
            if self.store is None:
                return call()
            os.environ.update(http_settings(store_timeout()))  # MLflow reads them per request
            return wait_out(self.store, call, unreachable, already)
        except Exception as error:
            if any(isinstance(link, MlflowException) for link in chain(error)):
                mark_refused(error, self.store or f"MLflow store {redact(self.uri)}")
            raise
