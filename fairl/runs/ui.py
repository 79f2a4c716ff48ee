"""The MLflow UI: `mlflow server` on a tracking store, stopped with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fairl.runs.store import artifact_root, client


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow server` command line serving the UI on store `uri`."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    root = artifact_root(uri)
    if root:
        command += ["--default-artifact-root", Path(root).as_uri()]
    return command


def serve_ui(uri: str, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI in the foreground until interrupted (SIGINT or SIGTERM)."""
    if uri.startswith("sqlite:///"):
        client(uri)  # create the schema first, so the UI opens on an empty store too
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    print(f"MLflow UI for {uri} on http://{host}:{port} (Ctrl-C to stop)", flush=True)
    # Own process group: `mlflow server` runs its web server as a child; stop them together.
    process = subprocess.Popen(ui_command(uri, host, port), env=env, start_new_session=True)

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
