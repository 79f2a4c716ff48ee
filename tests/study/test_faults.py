"""Nothing lost under faults: torn or emptied stores, disk full, races, kills, signals, shadowing.

Each test plants one fault on a small grid of 4 (planted world, rounds 5) and checks that the
study either ends whole (Optuna COMPLETE = MLflow FINISHED trial runs, one per grid cell, every
killed trial with a KILLED run) or stops with a short error naming the file. Subprocess faults
come from tests/fault_hooks/sitecustomize.py (FAIRL_FAULT).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from study_support import runs_of, trial_runs, use_store, write_study

from fairl.paths import StoreError
from fairl.runs import store as runs_store
from fairl.runs import write
from fairl.runs.provenance import _process_start
from fairl.study import journal
from fairl.study.runner import run_study
from fairl.study.status import study_status
from fairl.study.storage import open_storage, resolve_storage

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "tests" / "fault_hooks"


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())


def trials_of(name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage())).get_trials()


def check_whole(name: str, cells: int = 4) -> None:
    """Nothing lost or duplicated: COMPLETE = FINISHED runs = cells; killed trials have runs."""
    uri = runs_store.default_tracking_uri()
    trials = trials_of(name)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    finished = trial_runs(uri, name, write.FINISHED)
    assert len(complete) == len(finished) == cells, (len(complete), len(finished))
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == cells
    assert {t.user_attrs["mlflow_run_id"] for t in complete} == {r.info.run_id for r in finished}
    runs = runs_of(uri, name)
    assert not [run for run in runs if run.info.status == "RUNNING"]
    killed = {run.data.tags.get("trial_number") for run in runs if run.info.status == write.KILLED}
    for trial in trials:
        if trial.state.name == "FAIL" and ("fairl_killed" in trial.user_attrs
                                           or trial.user_attrs.get("fairl_interrupted")):
            assert str(trial.number) in killed, trial.number


def env_for(fault: str | None = None, mark: Path | None = None) -> dict[str, str]:
    """This process's environment (FAIRL_MLRUNS of the fixture) with the tree on PYTHONPATH."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ}
    if fault:
        paths.insert(0, str(HOOKS))
        env.update(FAIRL_FAULT=fault, FAIRL_FAULT_MARK=str(mark))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def fairl(*args: str, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairl", *args], env=env or env_for(),
                          capture_output=True, text=True, timeout=300, check=False, **kwargs)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if "INFO mlflow" not in line]


def wait_for_running(name: str, process, not_pid: int | None = None, deadline: float = 120,
                     number: int | None = None, held: Path | None = None):
    """A RUNNING trial with its MLflow run (of a worker other than `not_pid`; trial `number`
    if given; once the file `held` exists: hold_trial's trial waits in its fit), or None."""
    journal_path = Path(resolve_storage())
    end = time.time() + deadline
    while time.time() < end and process.poll() is None:
        time.sleep(0.2)
        if not journal_path.exists() or (held is not None and not held.exists()):
            continue
        try:
            trials = trials_of(name)
        except (KeyError, StoreError):
            continue
        for trial in trials:
            pid = int(trial.user_attrs.get("worker", "x:0:").split(":")[1])
            if (trial.state.name == "RUNNING" and "mlflow_run_id" in trial.user_attrs
                    and pid != not_pid and number in (None, trial.number)):
                return trial
    return None


# --- 1. torn journal tail -----------------------------------------------------------------------

def test_torn_tail_is_refused_then_repaired(store, tmp_path, capsys):
    from fairl.cli import main

    path = write_study(tmp_path, "torn")
    run_study(path, progress=False)
    journal_path = Path(resolve_storage())
    size = journal_path.stat().st_size
    os.truncate(journal_path, size - 60)  # a full disk cut the last record (trial 3's COMPLETE)
    for attempt in (lambda: study_status("torn"), lambda: run_study(path, progress=False)):
        with pytest.raises(StoreError) as error:
            attempt()
        message = str(error.value)
        assert str(journal_path) in message and "at byte" in message, message
        assert "fairl study repair torn" in message and "\n" not in message
    assert journal_path.stat().st_size == size - 60  # nothing appended onto the torn record
    assert main(["study", "status", "torn"]) == 3
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    assert main(["study", "repair", "torn"]) == 0
    out = capsys.readouterr().out
    assert "backed up to" in out and "removed 1 torn" in out and "trial 3:" in out, out
    assert list(journal_path.parent.glob("optuna.journal.*.bak"))
    assert journal.bad_records(journal_path)[0] == []
    assert run_study(path, progress=False).status == write.FINISHED
    check_whole("torn")


# --- 2. emptied or replaced stores, damaged db, disk full -----------------------------------------

def test_emptied_journal_is_an_error_not_a_new_study(store, tmp_path):
    path = write_study(tmp_path, "emptied")
    run_study(path, progress=False)
    journal_path = Path(resolve_storage())
    os.truncate(journal_path, 0)
    with pytest.raises(StoreError, match=f"{journal_path}: is empty, but MLflow .* 4 trial"):
        run_study(path, progress=False)
    assert journal_path.stat().st_size == 0  # no new study in it
    assert len(trial_runs(runs_store.default_tracking_uri(), "emptied")) == 4  # no reruns


def _replace_db(database: Path, change) -> None:
    """Put a changed copy of the db in its place (a new file: this process's open connections
    keep the old one, as another process's would); SQLite's backup API copies the WAL too."""
    copy = database.with_name("changed.db")
    source, target = sqlite3.connect(database), sqlite3.connect(copy)
    source.backup(target)
    target.execute("PRAGMA journal_mode=DELETE")  # the whole db in the one file
    target.close()
    source.close()
    change(copy)
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    os.replace(copy, database)


def test_emptied_mlflow_db_is_an_error(store, tmp_path):
    path = write_study(tmp_path, "nodb")
    run_study(path, progress=False)
    database = store / "mlflow.db"
    _replace_db(database, lambda copy: os.truncate(copy, 0))
    done = fairl("study", "run", str(path), "--no-progress")
    lines = error_lines(done)
    assert done.returncode == 3 and len(lines) == 1, done.stderr
    assert f"{database}: has no run of 4 of the complete trials" in lines[0]
    assert len(trials_of("nodb")) == 4  # nothing rerun


def test_corrupt_index_page_is_found(store, tmp_path):
    path = write_study(tmp_path, "corrupt")
    run_study(path, progress=False)
    database = store / "mlflow.db"

    def zero_an_index_page(copy: Path) -> None:
        connection = sqlite3.connect(copy)
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        (root,) = connection.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' "
                                     "AND tbl_name = 'metrics' ORDER BY rootpage DESC").fetchone()
        connection.close()
        with open(copy, "r+b") as file:
            file.seek((root - 1) * page_size)
            file.write(b"\xff" * page_size)

    _replace_db(database, zero_an_index_page)
    done = fairl("study", "run", str(path), "--no-progress")
    lines = error_lines(done)
    assert done.returncode == 3 and len(lines) == 1, done.stderr
    assert f"{database}: damaged SQLite database" in lines[0]


def test_disk_full_mid_trial_keeps_the_journal_whole(store, tmp_path, monkeypatch, capsys):
    from fairl.cli import main

    path = write_study(tmp_path, "full")
    real_write, calls = journal._write_all, []

    def write_half_then_enospc(fd: int, data: bytes) -> None:
        calls.append(1)
        if len(calls) == 20:  # inside trial 1 or 2: half a record reaches the disk
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(journal, "_write_all", write_half_then_enospc)
    assert main(["study", "run", str(path), "--no-progress"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert f"{resolve_storage()}: No space left on device [ENOSPC]" in err[0], err
    assert journal.bad_records(resolve_storage())[0] == []  # the half record was taken back
    monkeypatch.setattr(journal, "_write_all", real_write)
    assert run_study(path, progress=False).status == write.FINISHED
    check_whole("full")


def test_half_made_mlflow_db_is_named(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("FAIRL_MLRUNS", str(fresh))
    for name in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    path = write_study(tmp_path, "half")

    def disk_of_100_kb():  # files stop growing past 100 KB: EFBIG, as ENOSPC would
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    first = fairl("study", "run", str(path), "--no-progress", preexec_fn=disk_of_100_kb)
    assert first.returncode == 3 and "mlflow.db: MLflow cannot open or create it" in first.stderr
    done = fairl("study", "run", str(path), "--no-progress")
    lines = error_lines(done)
    assert done.returncode == 3 and len(lines) == 1, done.stderr
    assert f"{fresh / 'mlflow.db'}: half-made MLflow store" in lines[0]
    assert not (fresh / "optuna.journal").exists()  # no study was created on the way


# --- 3. and 4. concurrent launchers --------------------------------------------------------------

def test_two_launches_at_once_on_a_fresh_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRL_MLRUNS", str(tmp_path / "mlruns"))
    for name in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    path = write_study(tmp_path, "race")
    command = [sys.executable, "-m", "fairl", "study", "run", str(path), "--no-progress"]
    launches = [subprocess.Popen(command, env=env_for(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [launch.communicate(timeout=300)[0] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs
    assert all("race: 4/4 done" in output for output in outputs), outputs
    check_whole("race")


def test_launcher_waits_for_a_live_trial_of_another_launcher(store, tmp_path):
    from fairl.study import runner, spec
    from fairl.study import storage as storage_module
    from fairl.study.spec import load_study

    path = write_study(tmp_path, "shared")
    study = load_study(path)
    study_obj = storage_module.open_study(study, resolve_storage(), study.trials)
    study_obj.sampler = runner.make_sampler(study, 0)
    other = subprocess.Popen(["sleep", "60"])  # the other launcher's worker, mid-trial
    taken = study_obj.ask()
    spec.suggest(taken, study.space)
    identity = f"{socket.gethostname()}:{other.pid}:{_process_start(other.pid)}"
    taken.set_user_attr("worker", identity)

    def kill_once_the_rest_is_done():  # this launcher is then waiting on the other's trial
        while sum(t.state.name == "COMPLETE" for t in trials_of("shared")) < 3:
            time.sleep(0.5)
        time.sleep(3)
        other.kill()  # it dies before finishing: this launcher reaps it and runs it itself

    threading.Thread(target=kill_once_the_rest_is_done, daemon=True).start()
    report = run_study(path, progress=False)
    other.wait()
    assert report.status == write.FINISHED, report.messages
    assert not any("stopped" in message for message in report.messages)
    assert trials_of("shared")[taken.number].state.name == "FAIL"
    check_whole("shared")


# --- 5. SIGKILL before the run exists -------------------------------------------------------------

def test_worker_killed_before_its_run_exists_gets_a_killed_run(store, tmp_path):
    path = write_study(tmp_path, "early")
    env = env_for("kill_before_run:1", tmp_path / "killed.mark")
    done = fairl("study", "run", str(path), "--workers", "2", "--no-progress", env=env)
    assert (tmp_path / "killed.mark").exists()
    assert done.returncode == 0 and "exited with -9" in done.stdout, done.stdout + done.stderr
    victim = trials_of("early")[1]
    assert victim.state.name == "FAIL" and "died" in victim.user_attrs["fairl_killed"]
    runs = [run for run in trial_runs(runs_store.default_tracking_uri(), "early")
            if run.data.tags["trial_number"] == "1"]
    assert [run.info.status for run in runs] == [write.KILLED]
    assert runs[0].info.run_id == victim.user_attrs["mlflow_run_id"]
    assert "died" in runs[0].data.tags["error"]
    check_whole("early")


# --- 6. SIGTERM, and 7. a shadowing module in the working directory ------------------------------

def describe(name: str) -> str:
    """The study's trials, for a failed assertion."""
    keys = ("worker", "fairl_interrupted", "fairl_killed", "fail_reason")
    return "\n".join(f"  trial {t.number} {t.state.name} "
                     f"{ {k: t.user_attrs[k] for k in keys if k in t.user_attrs} } "
                     f"retry_history={t.system_attrs.get('retry_history')}"
                     for t in trials_of(name))


def test_sigterm_to_the_launcher_requeues_like_ctrl_c(store, tmp_path):
    path = write_study(tmp_path, "term")
    # Trial 0 waits for the signal: it lands mid-trial however loaded the machine.
    launch = subprocess.Popen([sys.executable, "-m", "fairl", "study", "run", str(path),
                               "--no-progress"], env=env_for("hold_trial:0", tmp_path / "m"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = wait_for_running("term", launch, number=0, held=tmp_path / "m")
    assert victim is not None, launch.communicate()[0]
    launch.send_signal(signal.SIGTERM)
    output = launch.communicate(timeout=120)[0]
    assert launch.returncode == 143, output
    trials = trials_of("term")
    assert trials[victim.number].state.name == "FAIL"
    assert any(t.system_attrs.get("failed_trial") == victim.number for t in trials)  # re-queued
    runs = {run.info.run_id: run for run in runs_of(runs_store.default_tracking_uri(), "term")}
    assert runs[victim.user_attrs["mlflow_run_id"]].info.status == write.KILLED
    assert not [run for run in runs.values() if run.info.status == "RUNNING"]
    assert run_study(path, progress=False).status == write.FINISHED
    check_whole("term")


def test_sigterm_to_a_worker_and_a_shadowing_module(store, tmp_path):
    path = write_study(tmp_path, "termworker")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    marker = tmp_path / "shadowed"
    (cwd / "concurrent.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(9)")
    command = [sys.executable, "-P", "-m", "fairl", "study", "run", str(path), "--workers", "2",
               "--no-progress"]
    # Trial 0 waits for the signal (hold_trial): it lands mid-fit however loaded the machine
    # (before, it could land in a journal write: test_sigterm_in_a_journal_lock_requeues_...).
    launch = subprocess.Popen(command, cwd=cwd, env=env_for("hold_trial:0", tmp_path / "m"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = wait_for_running("termworker", launch, not_pid=launch.pid, number=0,
                              held=tmp_path / "m")
    assert victim is not None, launch.communicate()[0]
    os.kill(int(victim.user_attrs["worker"].split(":")[1]), signal.SIGTERM)
    output = launch.communicate(timeout=240)[0]
    assert launch.returncode == 0 and "exited with 143" in output, output + describe("termworker")
    assert not marker.exists()  # no process imported the local concurrent.py
    trials = trials_of("termworker")
    assert trials[victim.number].state.name == "FAIL"
    assert trials[victim.number].user_attrs.get("fairl_interrupted")
    runs = {run.info.run_id: run for run in runs_of(runs_store.default_tracking_uri(),
                                                     "termworker")}
    assert runs[victim.user_attrs["mlflow_run_id"]].info.status == write.KILLED
    check_whole("termworker")


# --- 8. a stop signal in a trial's narrowest windows ----------------------------------------------

def test_sigterm_before_the_run_id_is_recorded_requeues_the_trial(store, tmp_path):
    """The signal lands as MLflow's start_run returns, before fairl holds the run's id: the
    trial is re-queued (not counted failed), and its run is not left RUNNING."""
    _check_trial_1_requeued(tmp_path, "termearly", "term_after_run:1")


def _check_trial_1_requeued(tmp_path, name: str, fault: str):
    """A launch of 2 workers with `fault` hitting trial 1: the worker exits 143, trial 1 is
    re-queued (not counted failed), its one run KILLED, no traceback; returns (output, trial)."""
    path = write_study(tmp_path, name)
    done = fairl("study", "run", str(path), "--workers", "2", "--no-progress",
                 env=env_for(fault))
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "exited with 143" in done.stdout, output + describe(name)
    assert f"{name}: 4/4 done (4 complete, 0 failed)" in done.stdout, output
    assert "Traceback" not in output, output
    victim = trials_of(name)[1]
    assert victim.state.name == "FAIL" and victim.user_attrs.get("fairl_interrupted"), \
        describe(name)
    check_whole(name)
    runs = [run for run in runs_of(runs_store.default_tracking_uri(), name)
            if run.data.tags.get("trial_number") == "1"]
    assert [run.info.status for run in runs] == [write.KILLED]
    return output, victim


def test_sigterm_in_optunas_tell_waits_for_it(store, tmp_path):
    """The signal lands in Optuna's tell of a finished trial: the tell ends (the trial stays
    COMPLETE, nothing re-run), then the worker stops; before, Optuna's own bookkeeping broke
    (UnboundLocalError) and the worker died with a traceback."""
    path = write_study(tmp_path, "termtell")
    done = fairl("study", "run", str(path), "--workers", "2", "--no-progress",
                 env=env_for("term_in_tell:1"))
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "exited with 143" in done.stdout, output
    assert "Traceback" not in output, output
    trials = trials_of("termtell")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, describe("termtell")
    check_whole("termtell")


def test_sigterm_in_a_journal_lock_requeues_the_trial(store, tmp_path):
    """The signal lands in Optuna's journal lock release (the trial's first journal write after
    its run exists), where CI's once did: the write ends whole and the trial is re-queued.
    Before, the lock's cleanup unlinked its file twice: the trial failed (FileNotFoundError)
    and was never re-run, and the worker went on as if no signal had come."""
    output, victim = _check_trial_1_requeued(tmp_path, "termlock", "term_in_journal_unlock:1")
    assert "FileNotFoundError" not in output, output
    assert victim.user_attrs.get("mlflow_run_id")  # the interrupted write itself went in whole
