"""The MLflow UI: `mlflow server` on a tracking store, stopped with every process it started.

`mlflow server` (3.x) starts uvicorn and, on a database store, a job runner that starts and
restarts huey_consumer processes (GenAI judges, online scoring; fairl uses none). A signal to
the server's group can race the runner's restart loop or land while it forks, and the
consumers then outlive the server. So job execution is switched off, and the teardown kills
whatever is still in the server's session (consumers reparented to init keep it) or below
it in the process tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fairl.paths import redact
from fairl.process import interrupt_on_sigterm
from fairl.runs.store import artifact_root, client, default_tracking_uri, runs_url

# MLflow's switch for its job runner and huey consumers (mlflow.environment_variables).
NO_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false"}


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow server` command line serving the UI on store `uri`."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    root = artifact_root(uri)
    if root:
        command += ["--default-artifact-root", Path(root).as_uri()]
    return command


def _stat(pid: int) -> tuple[int, int, str, str] | None:
    """(ppid, session id, state, start time) of a process from /proc, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": the name may hold spaces
    return int(fields[1]), int(fields[3]), fields[0], fields[19]


def session_processes(leader: int) -> dict[int, str]:
    """Live (non-zombie) processes in `leader`'s session or below it: pid -> start time."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[2] != "Z":
            table[int(entry.name)] = stat
    found = {pid for pid, stat in table.items() if stat[1] == leader or pid == leader}
    while below := {pid for pid, stat in table.items() if stat[0] in found} - found:
        found |= below  # descendants that started a session of their own
    return {pid: table[pid][3] for pid in found}


def stop_session(leader: int, grace: float = 15.0) -> None:
    """SIGTERM the session led by `leader`, then SIGKILL what is left after `grace` seconds.

    Every process seen is tracked (pid and start time): one that leaves the tree (its parent
    died first and it runs in a session of its own) is still stopped.
    """
    known = session_processes(leader)
    _signal_all(known, signal.SIGTERM)
    if not _wait_gone(leader, known, grace):
        _signal_all(known, signal.SIGKILL)
        _wait_gone(leader, known, 5.0)


def _alive(known: dict[int, str]) -> dict[int, str]:
    alive = {}
    for pid, start in known.items():
        stat = _stat(pid)
        if stat and stat[2] != "Z" and stat[3] == start:  # same start time: not a reused pid
            alive[pid] = start
    return alive


def _signal_all(known: dict[int, str], sig: int) -> None:
    for pid in _alive(known):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(leader: int, known: dict[int, str], timeout: float) -> bool:
    """True once nothing seen of the session is alive; False at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        fresh = {pid: start for pid, start in session_processes(leader).items()
                 if pid not in known}
        _signal_all(fresh, signal.SIGTERM)  # started after the first signal
        known.update(fresh)
        if not _alive(known):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def runs_link(uri: str, experiment: str) -> str:
    """Where experiment `experiment`'s runs table opens: on the tracking server itself, or
    (another store) on the UI `fairl ui` serves, saying so."""
    if uri.startswith(("http://", "https://")):
        return runs_url(uri, experiment)
    flag = "" if uri == default_tracking_uri() else f" --tracking-uri {redact(uri)}"
    return f"{runs_url('http://127.0.0.1:5000', experiment)} (served by `fairl ui{flag}`)"


def ui_banner(uri: str, base: str, experiments) -> str:
    """What `fairl ui` prints: the server, then each experiment's runs table (runs_url)."""
    lines = [f"MLflow UI for {uri} on {base} (Ctrl-C to stop)"]
    for experiment in sorted(experiments, key=lambda item: item.name):
        if experiment.name != "Default":  # MLflow's own, empty in fairl's stores
            lines.append(f"  {experiment.name}: {runs_url(base, experiment.experiment_id)}")
    if len(lines) == 1:
        lines.append(f"  experiments: {base}/#/experiments?workflowType=machine_learning")
    return "\n".join(lines)


def serve_ui(uri: str, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI in the foreground until interrupted (SIGINT or SIGTERM)."""
    # The schema is made first (a SQLite store), so the UI opens on an empty store too.
    experiments = client(uri).search_experiments()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **NO_JOBS}
    print(ui_banner(uri, f"http://{host}:{port}", experiments), flush=True)
    process = None
    # The handler is in place before the server starts: a SIGTERM in between would otherwise
    # kill this process and orphan the server. Own session: Ctrl-C reaches only this process,
    # which stops the server's whole session itself.
    with interrupt_on_sigterm():
        try:
            process = subprocess.Popen(ui_command(uri, host, port), env=env,
                                       start_new_session=True)
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            if process is not None:
                stop_session(process.pid)
                process.wait()
