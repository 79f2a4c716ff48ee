"""Who and what produced a run: git commit, fairl version, worker identity and liveness."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
from pathlib import Path

from fairl import __version__
from fairl.paths import project_root


@functools.cache
def git_state() -> tuple[str, bool | None]:
    """(commit, dirty) of the source checkout; ("unknown", None) outside git."""
    root = project_root()
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], check=True, capture_output=True,
                                text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit, bool(status.strip())


def environment_tags() -> dict[str, str]:
    """git commit, dirty flag and fairl version: what code produced a run."""
    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": str(dirty).lower(), "fairl_version": __version__}


def _process_start(pid: int) -> str | None:
    """Start time of process `pid` (clock ticks since boot) and whether it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return "zombie" if fields[0] in "ZX" else fields[19]


def worker_identity() -> str:
    """host:pid:start of this process; the start time guards against pid reuse."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid) or ''}"


def worker_alive(identity: str | None) -> bool | None:
    """Is the process named by worker_identity() alive? None when it ran on another host."""
    if not identity:
        return False
    host, _, rest = identity.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now = _process_start(pid)
    if now == "zombie":
        return False
    return not start or now is None or now == start
