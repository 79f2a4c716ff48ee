"""fairl.tracking: store URIs, run logging, liveness of workers, artifacts, `fairl ui`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from study_support import free_port, postgres_or_skip, use_store

from fairl.pairs import Pairs
from fairl.runs import provenance, read, write
from fairl.runs import store as runs_store


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRL_MLRUNS", str(tmp_path))
    monkeypatch.delenv("FAIRL_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert runs_store.resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runs_store.artifact_root(runs_store.resolve_tracking_uri()) == str(tmp_path / "artifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert runs_store.resolve_tracking_uri() == "http://mlflow:5000"
    assert runs_store.artifact_root("http://mlflow:5000") is None
    monkeypatch.setenv("FAIRL_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert runs_store.resolve_tracking_uri() == "sqlite:////elsewhere/x.db"
    assert runs_store.resolve_tracking_uri("file:///flag") == "file:///flag"


def test_flatten_and_mean_curves():
    assert write.flatten({"fit": {"lr": 0.1, "batch_size": None}, "seeds": [0, 1],
                             "world": {"name": "planted", "options": {}}}) == {
        "fit.lr": "0.1", "fit.batch_size": "null", "seeds": "[0, 1]", "world.name": "planted",
        "world.options": "{}"}
    histories = [[{"loss": 1.0, "gamma": 0.0}, {"loss": 0.5, "gamma": 1.0}],
                 [{"loss": 3.0, "gamma": 0.0}, {"loss": 1.5, "gamma": 1.0}]]
    assert write.mean_curves(histories) == {"loss": {0: 2.0, 1: 1.0}, "gamma": {0: 0.0, 1: 1.0}}
    long = [[{"loss": float(t)} for t in range(100)]]
    assert list(write.mean_curves(long, points=5)["loss"]) == [0, 25, 50, 74, 99]
    assert len(write.mean_curves(long, points=500)["loss"]) == 100


def test_worker_alive_tells_live_dead_zombie_and_foreign_processes():
    assert provenance.worker_alive(provenance.worker_identity()) is True
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = provenance.worker_identity().split(":")[0]
    assert provenance.worker_alive(f"{host}:{done.stdout.strip()}:1") is False
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)  # exited, not yet waited for: a zombie still answers kill(pid, 0)
    try:
        assert provenance.worker_alive(f"{host}:{zombie.pid}:") is False
    finally:
        zombie.wait()
    me = provenance.worker_identity().split(":")
    assert provenance.worker_alive(f"{me[0]}:{me[1]}:{int(me[2]) + 1}") is False  # pid reused
    assert provenance.worker_alive(f"elsewhere.example:{os.getpid()}:1") is None
    assert provenance.worker_alive(None) is False


def test_top_failures_rank_by_rounds_then_margin_with_text():
    pairs = Pairs(h_T=np.zeros((4, 2), np.float32), h_NT=np.zeros((4, 2), np.float32),
                  gt_T=np.array([1.0, 2.0, 3.0, 4.0]), gt_NT=np.zeros(4),
                  prompt_ids=np.arange(4), tnt=np.array([True, False, True, False]),
                  text_T=["a0", "a1", "a2", "a3"], text_NT=["b0", "b1", "b2", "b3"],
                  prompts=["p0", "p1", "p2", "p3"])
    rows = write.top_failures(pairs, np.array([5, 9, 9, 0]), np.array([0.1, 0.3, -0.2, 1]), 3)
    assert [row["pair"] for row in rows] == [2, 1, 0]
    assert rows[0] == {"rank": 0, "pair": 2, "failure_rounds": 9, "margin": -0.2,
                       "gt_margin": 3.0, "gt_T": 3.0, "gt_NT": 0.0, "prompt_id": 2, "tnt": True,
                       "prompt": "p2",
                       "text_T": "a2", "text_NT": "b2"}
    csv_text = write.failures_csv({0: rows})
    assert csv_text.splitlines()[0].startswith("seed,rank,pair,failure_rounds,margin")


def test_runs_log_in_one_batch_and_fail_with_a_traceback(store):
    uri = runs_store.resolve_tracking_uri()
    experiment = runs_store.experiment_id(uri, "tracking-test")
    assert runs_store.experiment_id(uri, "tracking-test") == experiment
    parent = write.start_run(uri, experiment, "parent", {"kind": "launch"})
    run = write.start_run(uri, experiment, "child", {"kind": "trial"}, parent_run_id=parent)
    write.log_run(uri, run, params={"fit.lr": 0.1}, metrics={"test_f1": 0.75},
                     curves={"loss": {0: 3.0, 1: 2.0, 2: 1.0}}, tags={"method": "fa_irl"})
    try:
        raise FloatingPointError("loss is nan\nsecond line")
    except FloatingPointError as error:
        write.fail_run(uri, run, error)
    client = runs_store.client(uri)
    logged = client.get_run(run)
    assert logged.info.status == write.FAILED
    assert logged.data.params == {"fit.lr": "0.1"} and logged.data.metrics["test_f1"] == 0.75
    assert logged.data.tags["error"] == "FloatingPointError: loss is nan"
    assert logged.data.tags["mlflow.parentRunId"] == parent
    assert [m.value for m in sorted(client.get_metric_history(run, "curve/loss"),
                                    key=lambda m: m.step)] == [3.0, 2.0, 1.0]
    traceback_file = Path(client.download_artifacts(run, "traceback.txt"))
    assert "FloatingPointError: loss is nan" in traceback_file.read_text()
    assert Path(logged.info.artifact_uri.removeprefix("file://")).is_relative_to(store)
    assert [r.info.run_id for r in read.running_runs(uri, experiment)] == [parent]
    write.kill_run(uri, parent, "launcher died")
    assert client.get_run(parent).info.status == write.KILLED
    assert provenance.environment_tags()["fairl_version"]


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_uri(request, store):
    """The default SQLite store, and an MLflow store on a real PostgreSQL server."""
    if request.param == "sqlite":
        yield runs_store.resolve_tracking_uri()
        return
    with postgres_or_skip() as url:
        yield url.replace("postgresql://", "postgresql+psycopg2://")


def test_bulk_metrics_are_the_rows_mlflow_log_batch_makes(sql_uri):
    """insert_new_metrics (a SQL store's fast path) against MLflow's own log_batch: the same
    latest values and the same history for every key, NaN and ±inf included; a second log of
    a key it has goes through MLflow's merge; a bad key is refused before anything is written."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    uri = sql_uri
    experiment = runs_store.experiment_id(uri, "bulk-metrics")
    client = runs_store.client(uri)
    assert write._sql_store(client) is not None  # a SQL store: the fast path
    points = [Metric("a", 1.0, 5, 0), Metric("a", 3.0, 5, 2), Metric("a", 2.0, 5, 2),
              Metric("a", 3.0, 5, 2),  # a duplicate point: stored once
              Metric("b", float("nan"), 5, 0), Metric("c", float("inf"), 5, 1),
              Metric("c", -float("inf"), 5, 0), Metric("d", 0.5, 9, 0), Metric("d", 0.7, 4, 0)]
    fast, slow = (write.start_run(uri, experiment, name, {}) for name in ("fast", "slow"))
    assert write.insert_new_metrics(client, write._sql_store(client), fast, points)
    client.log_batch(slow, metrics=points)

    def stored(run):  # NaN as a string, so that the two stores' values compare equal
        def value(v):
            return "nan" if np.isnan(v) else v

        latest = client.get_run(run).data.metrics
        history = {key: sorted((m.step, m.timestamp, value(m.value)) for m in
                               client.get_metric_history(run, key)) for key in latest}
        return {key: value(v) for key, v in latest.items()}, history

    latest, history = stored(fast)
    assert (latest, history) == stored(slow)
    assert latest == {"a": 3.0, "b": "nan", "c": latest["c"], "d": 0.5} and latest["c"] > 1e300
    assert history["a"] == [(0, 5, 1.0), (2, 5, 2.0), (2, 5, 3.0)]  # the duplicate once
    # the run has key a now: the fast path declines, log_run goes through MLflow's merge
    assert not write.insert_new_metrics(client, write._sql_store(client), fast,
                                        [Metric("a", 9.0, 6, 7)])
    write.log_run(uri, fast, curves={"x": {0: 1.0}}, metrics={"a": 9.0})
    latest, history = stored(fast)
    assert latest["a"] == 3.0 and (0, history["a"][1][1], 9.0) in history["a"]  # step 2 stays
    assert latest["curve/x"] == 1.0
    bad = write.start_run(uri, experiment, "bad", {})
    with pytest.raises(MlflowException):
        write.log_run(uri, bad, metrics={"ok": 1.0, "up/../key": 2.0})
    assert client.get_run(bad).data.metrics == {}


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url} in {timeout} s")


def process_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, session, state, command line) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(stat[1]), int(stat[3]), stat[0], command)
    return table


def process_tree(root: int) -> dict[int, str]:
    """The live processes below `root` (by parent) or in a session one of them leads."""
    table = process_table()
    tree = {root}
    while True:
        below = {pid for pid, (ppid, session, _, _) in table.items()
                 if (ppid in tree or session in tree) and pid not in tree}
        if not below:
            return {pid: table[pid][3] for pid in tree if pid in table and table[pid][2] != "Z"}
        tree |= below


def port_free(port: int) -> bool:
    """A new server can listen on `port` (SO_REUSEADDR, as servers bind: TIME_WAIT is no owner)."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def run_server(command: list[str], url: str, log: Path, stop: int = signal.SIGTERM,
               port: int | None = None) -> int:
    """Start a server, wait for `url` to answer, stop it with `stop`; its whole tree must end."""
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        tree: dict[int, str] = {}
        try:
            status = wait_for_http(url, process)
            time.sleep(2)  # let the server start what it starts after answering (job runners)
            tree = process_tree(process.pid)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log.read_text()[-3000:]}") from None
        finally:
            process.send_signal(stop)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    time.sleep(1)  # a process reparented to init is reaped by it, not by us
    table = process_table()
    left = {pid: command for pid, command in tree.items()
            if pid in table and table[pid][2] != "Z" and table[pid][3] == command}
    assert not left, f"still running after {signal.Signals(stop).name}: {left}"
    assert process.returncode == 0, log.read_text()[-3000:]
    if port is not None:
        assert port_free(port), f"port {port} still taken"
    return status


# Ctrl-C's handler set first: a suite run as a script's background job (`cmd &`) has SIGINT
# ignored, its children inherit that, and the SIGINT the tests send would never arrive.
FAIRL = [sys.executable, "-c", ("import signal, sys; signal.signal(signal.SIGINT, "
                                "signal.default_int_handler); from fairl.cli import main; "
                                "sys.exit(main())")]


@pytest.mark.slow
def test_fairl_ui_serves_the_default_store(store, tmp_path):
    port = free_port()
    status = run_server(FAIRL + ["ui", "--port", str(port)], f"http://127.0.0.1:{port}/",
                        tmp_path / "ui.log", port=port)
    assert status == 200
    with pytest.raises(OSError):  # stopped: nothing listens any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_fairl_ui_stop_ends_its_whole_tree(store, tmp_path, stop):
    from fairl.runs import ui

    port = free_port()
    assert run_server(FAIRL + ["ui", "--port", str(port)], f"http://127.0.0.1:{port}/",
                      tmp_path / "ui.log", stop=stop, port=port) == 200
    # MLflow's job runner and its huey consumers are what outlived the server before.
    assert "huey" not in (tmp_path / "ui.log").read_text()
    assert ui.NO_JOBS["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_stop_session_kills_a_process_that_left_for_a_session_of_its_own():
    from fairl.runs import ui

    # A session leader whose child leads a session of its own and ignores SIGTERM.
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'], "
              "start_new_session=True); time.sleep(60)")
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 20
    while len(ui.session_processes(leader.pid)) < 2 and time.time() < deadline:
        time.sleep(0.1)
    started = ui.session_processes(leader.pid)
    assert len(started) >= 2, started
    ui.stop_session(leader.pid, grace=1.0)
    leader.wait(timeout=10)
    time.sleep(0.5)
    assert not ui.session_processes(leader.pid)
    assert all(not Path(f"/proc/{pid}").exists()
               or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
               for pid in started)


@pytest.mark.slow
def test_fairl_dashboard_serves_the_study_storage(store, tmp_path):
    from fairl.study.runner import run_study

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from study_support import write_study

    run_study(write_study(tmp_path, "dash", search={"objective": ["max_margin"]}),
              progress=False)
    port = free_port()
    status = run_server(FAIRL + ["dashboard", "--port", str(port)],
                        f"http://127.0.0.1:{port}/dashboard/", tmp_path / "dashboard.log",
                        stop=signal.SIGINT, port=port)
    assert status == 200


def test_ui_banner_links_each_experiment_to_its_runs_table():
    from types import SimpleNamespace

    from fairl.runs import ui

    experiments = [SimpleNamespace(name="smoke", experiment_id="3"),
                   SimpleNamespace(name="Default", experiment_id="0")]
    banner = ui.ui_banner("sqlite:///x.db", "http://127.0.0.1:5000", experiments).splitlines()
    # The runs table (not MLflow 3's GenAI overview) with fairl's shared view of columns.
    assert banner[1:] == [("  smoke: http://127.0.0.1:5000/#/experiments/3/runs"
                           "?workflowType=machine_learning&viewStateShareKey=fairl")]
    assert "workflowType=machine_learning" in ui.ui_banner("sqlite:///x.db", "http://h:1", [])


def test_a_lost_unique_key_race_is_tried_again_and_other_errors_are_not():
    """log_world_inputs' guard: MLflow's dataset get-or-create loses races between hosts."""
    from mlflow.exceptions import MlflowException

    from fairl.runs.write import _retry_unique_race

    calls = []

    def racy():
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException('(psycopg2.errors.UniqueViolation) duplicate key value '
                                  'violates unique constraint "dataset_pk"')
        return "logged"

    assert _retry_unique_race(racy) == "logged" and len(calls) == 2

    def broken():
        calls.append(1)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run not found")

    calls.clear()
    with pytest.raises(MlflowException, match="not found"):
        _retry_unique_race(broken)
    assert len(calls) == 1
