"""A tracking outage never costs a trial: a real `mlflow server` taken away mid-study.

One server (SQLite backend, served artifacts) for the module; each test plants a pause at a
point of one trial (tests/fault_hooks: `pause_at`), takes the server away there (SIGKILL:
connections refused; SIGSTOP: a hung server whose late answers a retry must not duplicate)
and checks that the study ends whole (Optuna COMPLETE = FINISHED trial runs, one run and one
reward model per trial), or, past FAIRL_STORE_TIMEOUT, that the launch stops with exit 3 and
the trial is re-queued, never failed. Journal storage; PostgreSQL restarts: tests/runs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from study_support import MlflowServer, use_store, write_study

from fairl.runs import write
from fairl.study.storage import open_storage, resolve_storage

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "tests" / "fault_hooks"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    mlflow_server = MlflowServer(tmp_path_factory.mktemp("server"),
                                 tmp_path_factory.getbasetemp())
    yield mlflow_server
    mlflow_server.close()


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())


def launch(path: Path, uri: str, fault: str | None, mark: Path, timeout: float
           ) -> subprocess.Popen:
    """`fairl study run` in a subprocess, tracked at `uri`, FAIRL_STORE_TIMEOUT=`timeout`."""
    env = {**os.environ, "FAIRL_STORE_TIMEOUT": str(timeout), "FAIRL_FAULT_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOKS), str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    if fault:
        env["FAIRL_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "fairl", "study", "run", str(path),
                             "--tracking-uri", uri, "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def paused(mark: Path, point: str, number: int, process: subprocess.Popen) -> Path:
    """Wait until trial `number` stops before `point`; the file that lets it go on."""
    held = Path(f"{mark}.{point}.{number}")
    end = time.monotonic() + 120
    while not held.exists():
        assert process.poll() is None and time.monotonic() < end, process.communicate()[0]
        time.sleep(0.05)
    return Path(f"{held}.go")


def trials_of(name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage())).get_trials()


def runs_of(uri: str, name: str) -> list:
    from fairl.runs.store import client

    experiment = client(uri).get_experiment_by_name(name)
    return client(uri).search_runs([experiment.experiment_id], "tags.kind = 'trial'",
                                   max_results=1000)


def check_whole(uri: str, name: str, cells: int = 4) -> None:
    """COMPLETE = FINISHED runs = cells, one run per trial, one reward model per run."""
    from fairl.runs.store import client

    trials = trials_of(name)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    runs = runs_of(uri, name)
    finished = [run for run in runs if run.info.status == write.FINISHED]
    assert len(complete) == len(finished) == cells, (len(complete), len(finished))
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == cells
    assert {t.user_attrs["mlflow_run_id"] for t in complete} == {r.info.run_id for r in finished}
    numbers = [run.data.tags["trial_number"] for run in runs]
    assert len(numbers) == len(set(numbers)) == len(trials), numbers  # no run made twice
    assert not [run for run in runs if run.info.status == "RUNNING"]
    for run in finished:
        models = client(uri).search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
        assert len(models) == 1, [model.model_id for model in models]  # no model made twice


def check_quiet(output: str, name: str) -> None:
    """No per-run MLflow lines; the runs table's link once, at the start."""
    assert "View run" not in output and "View experiment" not in output, output
    links = [line for line in output.splitlines() if line.startswith(f"{name}: runs table ")]
    assert len(links) == 1 and "/#/experiments/" in links[0], output


def waits(output: str) -> list[str]:
    return [line for line in output.splitlines() if " unreachable since " in line]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_server_away_20_s_is_waited_out(server, store, tmp_path):
    path, mark = write_study(tmp_path, "away"), tmp_path / "mark"
    run = launch(path, server.url, "pause_at:log_run:1", mark, 60)
    go = paused(mark, "log_run", 1, run)  # trial 1 has its run and reward model: the batch next
    server.kill()
    go.touch()
    time.sleep(20)
    server.start()  # and seconds more until it answers
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output
    lines = waits(output)
    assert lines and "trial 1 of away waits" in lines[0] and "Connection refused" in lines[0], \
        output
    assert f"MLflow tracking server {server.url} answers again" in output, output
    assert "away: 4/4 done (4 complete, 0 failed)" in output, output
    check_quiet(output, "away")
    check_whole(server.url, "away")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_server_away_past_the_deadline_stops_the_launch_and_requeues(server, store, tmp_path):
    path, mark = write_study(tmp_path, "gone"), tmp_path / "mark"
    run = launch(path, server.url, "pause_at:log_run:1", mark, 20)
    go = paused(mark, "log_run", 1, run)
    server.kill()
    go.touch()
    started = time.monotonic()
    output = run.communicate(timeout=300)[0]
    stopped_after = time.monotonic() - started
    assert run.returncode == 3, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"fairl: store error: MLflow tracking server {server.url} "
                           "unreachable for 2"), output
    assert "trial 1 re-queued (not failed)" in last, output
    # It waited the deadline (20 s) and stopped: not MLflow's ~4 min of silent retries.
    assert 20 <= stopped_after < 60, (stopped_after, output)
    trials = trials_of("gone")
    assert trials[1].state.name == "FAIL" and "fail_reason" not in trials[1].user_attrs
    assert [t.system_attrs.get("failed_trial") for t in trials if t.state.name == "WAITING"] \
        == [1]
    run_id = trials[1].user_attrs["mlflow_run_id"]

    server.start()
    from fairl.runs.store import client

    assert client(server.url).get_run(run_id).info.status == "RUNNING"  # nobody could end it
    rerun = launch(path, server.url, None, mark, 20)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0 and "gone: 4/4 done (4 complete, 0 failed)" in output, output
    killed = client(server.url).get_run(run_id)
    assert killed.info.status == write.KILLED and "trial 1 is FAIL" in killed.data.tags["error"]
    check_whole(server.url, "gone")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_batch_whose_server_stays_away_is_requeued_not_failed(server, store, tmp_path):
    """`batch: 2`: the second batch meets the outage as it starts trial 2's run (the logging
    thread too, if batch 1 is still being logged); past the deadline the launch exits 3 and
    every untold trial is re-queued, none failed; the rerun is whole."""
    path, mark = write_study(tmp_path, "gone_batched", batch=2), tmp_path / "mark"
    run = launch(path, server.url, "pause_at:start_run:2", mark, 6)  # the 20 s case is above
    go = paused(mark, "start_run", 2, run)
    server.kill()
    go.touch()
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 3, output
    assert "re-queued (not failed)" in output.strip().splitlines()[-1], output
    trials = trials_of("gone_batched")
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and not [t for t in failed if "fail_reason" in t.user_attrs], output
    requeued = sorted(t.system_attrs.get("failed_trial") for t in trials
                      if t.state.name == "WAITING")
    assert requeued == sorted(t.number for t in failed), (requeued, output)

    server.start()
    rerun = launch(path, server.url, None, mark, 20)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0 and "gone_batched: 4/4 done (4 complete, 0 failed)" in output, \
        output
    check_whole(server.url, "gone_batched")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_hung_server_at_every_point_of_a_trial(server, store, tmp_path):
    """Before the trial's run exists, in its reward model's calls, its batch, its artifact
    upload: the server hangs 4 s each time (requests time out after 3 s); nothing is lost."""
    path, mark = write_study(tmp_path, "hung"), tmp_path / "mark"
    points = [("start_run", 0), ("log_reward_model", 1), ("log_run", 2), ("log_text", 3)]
    run = launch(path, server.url, "pause_at:" + ",".join(f"{p}:{n}" for p, n in points),
                 mark, 30)
    for point, number in points:
        go = paused(mark, point, number, run)
        server.pause()
        go.touch()
        time.sleep(4)
        server.resume()
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output
    lines = waits(output)
    assert {f"trial {n} of hung waits" for _, n in points} <= \
        {line.split("); ")[1].split(",")[0] for line in lines}, output
    assert all("timed out" in line for line in lines), lines
    check_quiet(output, "hung")
    check_whole(server.url, "hung")


class AnswerLosingProxy:
    """A TCP proxy to the server that, once for each POST endpoint in `lose`, passes the
    request on and, when the server's answer comes, resets the connection instead: the
    server made the thing, the client never hears so (a connection cut at the worst time)."""

    def __init__(self, port: int):
        self.target, self.lose, self.lost = port, set(), []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        cut = threading.Event()

        def requests_up() -> None:
            try:
                while data := client.recv(65536):
                    line = re.match(rb"POST /api/[\d.]+/mlflow/([\w/-]+) ", data)
                    if line and line.group(1).decode() in self.lose:
                        self.lose.discard(line.group(1).decode())
                        self.lost.append(line.group(1).decode())
                        cut.set()
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=requests_up, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                if cut.is_set():  # the answer: reset the client's connection instead
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


def test_a_create_whose_answer_is_lost_is_found_not_made_twice(server, monkeypatch, capsys):
    from fairl.runs.store import client, experiment_id

    monkeypatch.setenv("FAIRL_STORE_TIMEOUT", "30")
    proxy = AnswerLosingProxy(server.port)
    experiment = experiment_id(proxy.url, "lost")
    proxy.lose = {"runs/create", "logged-models", "runs/outputs"}
    run_id = write.start_run(proxy.url, experiment, "run", {"kind": "test"})
    model = write.start_logged_model(proxy.url, experiment, run_id, "reward", {})
    assert sorted(proxy.lost) == ["logged-models", "runs/create", "runs/outputs"]  # all 3 cut
    assert capsys.readouterr().err.count(f"MLflow tracking server {proxy.url} unreachable") == 3
    direct = client(server.url)
    assert [run.info.run_id for run in direct.search_runs([experiment])] == [run_id]
    assert [m.model_id for m in direct.search_logged_models([experiment])] == [model.model_id]
    assert [output.model_id for output in direct.get_run(run_id).outputs.model_outputs] == \
        [model.model_id]


def test_a_store_error_is_not_the_configurations_and_the_exit_code_says_so(store, tmp_path,
                                                                           monkeypatch, capsys):
    """The store refuses trial 1's write (a real MLflow error: a dataset name longer than it
    takes): the trial fails, marked as the store's; the launch exits 1 saying so; the next
    launch runs it again."""
    from fairl.cli import main
    from fairl.runs.store import client, default_tracking_uri

    path, uri = write_study(tmp_path, "refused"), default_tracking_uri()
    log_world_inputs = write.log_world_inputs

    def refused_for_trial_1(uri, run_id, world, *args):
        if client(uri).get_run(run_id).data.tags["trial_number"] == "1":
            world = "w" * 600  # MLflow takes dataset names of up to 500 characters
        return log_world_inputs(uri, run_id, world, *args)

    monkeypatch.setattr(write, "log_world_inputs", refused_for_trial_1)
    assert main(["study", "run", str(path), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "refused: trial 1 failed: MlflowException: 'name' exceeds the maximum length" \
        in captured.err, captured
    assert f"(raised by MLflow store {uri}, not the configuration)" in captured.err, captured
    assert "1 trial(s) FAILED for a reason that is not their configuration" in captured.out
    trials = trials_of("refused")
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs["fail_store"] == \
        f"MLflow store {uri}"
    failed = [r for r in runs_of(uri, "refused") if r.data.tags["trial_number"] == "1"]
    assert [r.info.status for r in failed] == [write.FAILED]

    monkeypatch.setattr(write, "log_world_inputs", log_world_inputs)
    assert main(["study", "run", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"trial 1: failed by MLflow store {uri}, not its configuration; re-queued" in out, out
    trials = trials_of("refused")
    assert sum(t.state.name == "COMPLETE" for t in trials) == 4
    assert [t.system_attrs.get("failed_trial") for t in trials[4:]] == [1]
