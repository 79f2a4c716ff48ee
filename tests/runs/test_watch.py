"""MLflow's errors sorted: a server that does not answer is waited for, a real error is not."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from study_support import free_port, use_store

from fairl import outage
from fairl.runs import watch
from fairl.runs.store import client, default_tracking_uri


def test_a_closed_port_is_unreachable_and_given_up_on_in_time(monkeypatch, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nobody listens: connections refused
    monkeypatch.setenv(outage.TIMEOUT_VARIABLE, "2")
    started = time.monotonic()
    with pytest.raises(outage.StoreUnreachable) as error:
        client(uri).get_experiment_by_name("any")
    assert time.monotonic() - started < 10  # not MLflow's own 7 retries (~4 min)
    assert str(error.value).startswith(f"MLflow tracking server {uri} unreachable for 2 s")
    assert "Connection refused" in str(error.value)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Connection refused" in lines[0], lines
    assert watch.http_settings(600)["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert watch.http_settings(20)["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"


def test_a_real_error_is_raised_at_once_and_marked_as_the_stores(tmp_path, monkeypatch,
                                                                  tmp_path_factory):
    from mlflow.exceptions import MlflowException

    use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())
    uri = default_tracking_uri()
    with pytest.raises(MlflowException) as error:
        client(uri).get_run("0" * 32)  # no such run: RESOURCE_DOES_NOT_EXIST
    assert watch.unreachable(error.value) is None
    assert outage.refused_by(error.value) == f"MLflow store {uri}"
