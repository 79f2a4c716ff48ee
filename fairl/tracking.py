"""MLflow tracking: the one place that knows store URIs, run layout, tags and artifacts.

Store. By default a SQLite database `mlruns/mlflow.db` with artifacts under
`mlruns/artifacts/<experiment>` (`mlruns/` is `fairl.paths.mlruns_dir()`, env FAIRL_MLRUNS);
any MLflow tracking URI by `--tracking-uri`, env FAIRL_TRACKING_URI or MLFLOW_TRACKING_URI.

Run layout. One experiment per study. Each `fairl study run` launch is a parent run
(tag kind=launch); each Optuna trial is one child run under it (kind=trial) holding the
whole configuration evaluated on every seed of the study:
* params: the resolved configuration (world.*, fit.* without the seed, seeds, variant);
* metrics: final train_/test_ accuracy, f1, roc_auc, pairwise_accuracy, starc as the mean
  over seeds, `<metric>_std` over seeds, and each seed's value as `seed_<s>/<metric>`;
  per-round curves `curve/<name>` (loss terms, n_failures = |F_t|, n_sampled = |S_t|, gamma,
  lam, p, margins) with step = round, averaged over seeds;
* tags: study, ablation, method, variant, seed (the seeds, comma-separated), world,
  dataset_hash, config_id, trial_number, optuna_* links, worker, git_commit, git_dirty,
  fairl_version;
* artifacts: config.yaml (the resolved configuration), history.csv (every seed, every
  round), failures.csv (top-k pairs by rounds spent in F_t, with r* of both outputs and text
  when the world has them), rewards.npz (each seed's fitted heads and its rewards of every
  held-out output, with r*: what reports/ plots without loading the world; ~8 bytes per test
  pair and seed); a failed trial adds traceback.txt and the tag `error`, and ends FAILED.
Logging goes through `MlflowClient.log_batch` (one call per run; a per-point loop is ~30x
slower). mlflow is imported lazily: it costs ~2 s.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from fairl import __version__
from fairl.paths import mlruns_dir, project_root

# Metrics every fit is judged on (fairl.metrics.evaluate_reward), in table order.
FINAL_METRICS = ("accuracy", "f1", "roc_auc", "pairwise_accuracy", "starc")
# Per-round history keys logged as curves (fairl.irl.fit history records).
CURVES = ("loss", "loss_base", "loss_fail", "loss_l2", "n_failures", "n_sampled", "gamma", "lam",
          "p", "margin_mean", "margin_min", "train_pairwise_accuracy")

# MLflow run statuses (strings, so callers need not import mlflow).
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


# --- where runs go ---------------------------------------------------------------------------

def default_tracking_uri() -> str:
    """The default store: SQLite database mlruns/mlflow.db."""
    return f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Flag, then FAIRL_TRACKING_URI, then MLFLOW_TRACKING_URI, then the default store."""
    return (uri or os.environ.get("FAIRL_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
            or default_tracking_uri())


def artifact_root(uri: str) -> str | None:
    """Local artifact directory for a local SQLite store (beside the db); None = store default."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        return str((database.parent / "artifacts").resolve())
    return None


@functools.cache
def client(uri: str):
    """An MlflowClient for `uri` (one per process; creating the db schema takes seconds once)."""
    # No network here: MLflow 3 otherwise tries to send usage telemetry.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        _fast_sqlite(database)
    return MlflowClient(tracking_uri=uri)


_FAST_SQLITE: set[str] = set()


def _fast_sqlite(database: Path) -> None:
    """WAL journal and synchronous=NORMAL for an MLflow SQLite store.

    In the default rollback-journal mode every commit fsyncs several times (~20 ms each on
    this machine's disk; a trial makes a handful of commits). WAL with synchronous=NORMAL
    commits without fsync and stays consistent; a killed process loses nothing, only a power
    cut can drop the last commits. WAL is a property of the file; synchronous is set on
    every new connection to it.
    """
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not _FAST_SQLITE:
        @event.listens_for(Engine, "connect")
        def _on_connect(connection, _record):
            if isinstance(connection, sqlite3.Connection):
                files = {row[2] for row in connection.execute("PRAGMA database_list")}
                if files & _FAST_SQLITE:
                    connection.execute("PRAGMA synchronous=NORMAL")

    _FAST_SQLITE.update({str(database.absolute()), str(database.resolve())})
    try:
        connection = sqlite3.connect(database, timeout=30)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.OperationalError:  # busy (another process): keep its journal mode
        pass


def experiment_id(uri: str, name: str, tags: dict[str, str] | None = None) -> str:
    """Id of experiment `name`, created (artifacts under the store's artifact root) if missing."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    root = artifact_root(uri)
    location = Path(root, name).as_uri() if root else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags=tags)
    except MlflowException:  # another process created it first
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# --- who and what ----------------------------------------------------------------------------

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


# --- runs ------------------------------------------------------------------------------------

def start_run(uri: str, experiment: str, name: str, tags: dict[str, str],
              parent_run_id: str | None = None) -> str:
    """Create a RUNNING run (nested under `parent_run_id` if given); returns its id."""
    tags = {**tags, "mlflow.runName": name, "mlflow.source.name": "fairl",
            "mlflow.source.type": "LOCAL", "mlflow.user": os.environ.get("USER", "fairl")}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client(uri).create_run(experiment, run_name=name, tags=tags)
    _ARTIFACT_URIS[run.info.run_id] = run.info.artifact_uri
    return run.info.run_id


_ARTIFACT_URIS: dict[str, str] = {}  # run id -> artifact URI, for runs started here


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dict -> {"a.b": "value"} strings, as MLflow params."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def mean_curves(histories: list[list[dict]], points: int | None = None
                ) -> dict[str, dict[int, float]]:
    """Per-round curves averaged over seeds: {name: {round: value}}.

    `points` caps the rounds kept per curve (evenly spaced, first and last included): MLflow
    stores each point as one row (~0.06 ms each here); history.csv keeps every round.
    """
    rounds = min(len(history) for history in histories)
    steps = range(rounds)
    if points is not None and rounds > points:
        steps = sorted({round(i * (rounds - 1) / (points - 1)) for i in range(points)}) \
            if points > 1 else [rounds - 1]
    return {name: {t: sum(float(history[t][name]) for history in histories) / len(histories)
                   for t in steps}
            for name in CURVES if all(name in history[0] for history in histories)}


def log_run(uri: str, run_id: str, *, params: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None,
            curves: dict[str, dict[int, float]] | None = None,
            tags: dict[str, str] | None = None) -> None:
    """Params, final metrics, curves (`curve/<name>` with step = round) and tags in one batch."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    batch_metrics = [Metric(key, float(value), now, 0) for key, value in (metrics or {}).items()]
    for name, values in (curves or {}).items():
        batch_metrics += [Metric(f"curve/{name}", float(value), now, step)
                          for step, value in values.items()]
    client(uri).log_batch(
        run_id,
        metrics=batch_metrics,
        params=[Param(key, str(value)[:6000]) for key, value in (params or {}).items()],
        tags=[RunTag(key, str(value)[:8000]) for key, value in (tags or {}).items()])


def log_text(uri: str, run_id: str, text: str | bytes, path: str) -> None:
    """A text (or, given bytes, binary) artifact at `path` inside the run's artifact directory.

    A local artifact directory (the default store) is written directly: MlflowClient.log_text
    would write a temporary file and copy it (~8 ms per file here).
    """
    import tempfile
    from urllib.parse import unquote, urlparse

    artifact_uri = _ARTIFACT_URIS.get(run_id) or client(uri).get_run(run_id).info.artifact_uri
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file") and not parsed.netloc:
        target = Path(unquote(parsed.path), path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text, encoding="utf-8")
    elif isinstance(text, bytes):
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder, Path(path).name)
            local.write_bytes(text)
            directory = str(Path(path).parent)
            client(uri).log_artifact(run_id, str(local), None if directory == "." else directory)
    else:
        client(uri).log_text(run_id, text, path)


def end_run(uri: str, run_id: str, status: str = FINISHED) -> None:
    client(uri).set_terminated(run_id, status)


def error_line(error: BaseException) -> str:
    """One readable line: `Type: first line of the message`."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def fail_run(uri: str, run_id: str, error: BaseException) -> None:
    """traceback.txt artifact, tag `error` (one readable line), status FAILED."""
    text = "".join(traceback.format_exception(error))
    reason = error_line(error)
    try:
        log_text(uri, run_id, text, "traceback.txt")
    finally:
        client(uri).set_tag(run_id, "error", reason[:8000])
        end_run(uri, run_id, FAILED)


def running_runs(uri: str, experiment: str) -> list:
    """Runs of `experiment` still marked RUNNING."""
    return client(uri).search_runs([experiment], "attributes.status = 'RUNNING'",
                                   max_results=10000)


def kill_run(uri: str, run_id: str, reason: str) -> None:
    """Mark an orphaned run KILLED, saying why in its `error` tag."""
    client(uri).set_tag(run_id, "error", reason[:8000])
    end_run(uri, run_id, KILLED)


# --- artifacts -------------------------------------------------------------------------------

def history_csv(histories: dict[int, list[dict]]) -> str:
    """Every round of every seed's fit as CSV (seed first)."""
    rows = [{"seed": seed, **record} for seed, history in histories.items() for record in history]
    return _csv(rows)


def top_failures(train, failure_counts, margins, k: int) -> list[dict]:
    """The k training pairs that spent most rounds in F_t, with margins and text if any."""
    import numpy as np

    # Most rounds in F_t first; ties: the most wrongly ordered pair (lowest margin) first.
    order = np.lexsort((np.asarray(margins), -np.asarray(failure_counts)))[:k]
    rows = []
    for rank, index in enumerate(order):
        row = {"rank": rank, "pair": int(index), "failure_rounds": int(failure_counts[index]),
               "margin": float(margins[index])}
        if train.gt_T is not None and train.gt_NT is not None:
            row["gt_margin"] = float(train.gt_T[index] - train.gt_NT[index])
            row["gt_T"] = float(train.gt_T[index])
            row["gt_NT"] = float(train.gt_NT[index])
        if train.prompt_ids is not None:
            row["prompt_id"] = train.prompt_ids[index].item() \
                if hasattr(train.prompt_ids[index], "item") else train.prompt_ids[index]
        if train.tnt is not None:
            row["tnt"] = bool(train.tnt[index])
        for field in ("prompts", "text_T", "text_NT"):
            texts = getattr(train, field)
            if texts is not None:
                row[field.removesuffix("s")] = texts[index]
        rows.append(row)
    return rows


def rewards_npz(results: dict, test) -> bytes:
    """rewards.npz: per seed the fitted heads and R of every held-out output; r* once.

    Keys: seed<s>/theta_D, seed<s>/theta_F (empty without a failure head), seed<s>/biases
    (b_D, b_F), seed<s>/test_R_T, seed<s>/test_R_NT; test_gt_T, test_gt_NT when the world
    has r*. `results` maps seed -> fairl.irl.FitResult; `test` is the world's test Pairs.
    """
    import numpy as np

    arrays = {}
    for seed, result in results.items():
        arrays[f"seed{seed}/theta_D"] = np.asarray(result.theta_D, np.float32)
        arrays[f"seed{seed}/theta_F"] = np.asarray(
            result.theta_F if result.theta_F is not None else [], np.float32)
        arrays[f"seed{seed}/biases"] = np.array([result.b_D, result.b_F], np.float32)
        arrays[f"seed{seed}/test_R_T"] = result.reward(test.h_T).astype(np.float32)
        arrays[f"seed{seed}/test_R_NT"] = result.reward(test.h_NT).astype(np.float32)
    if test.gt_T is not None and test.gt_NT is not None:
        arrays["test_gt_T"] = np.asarray(test.gt_T, np.float32)
        arrays["test_gt_NT"] = np.asarray(test.gt_NT, np.float32)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def failures_csv(rows_by_seed: dict[int, list[dict]]) -> str:
    return _csv([{"seed": seed, **row} for seed, rows in rows_by_seed.items() for row in rows])


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# --- the UI ----------------------------------------------------------------------------------

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
    import signal

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


def record_run(uri: str | None, experiment: str, name: str, *, params: dict[str, Any],
               metrics: dict[str, float], curves: dict[str, list[float]],
               tags: dict[str, str], texts: dict[str, str | bytes] | None = None) -> str:
    """Log a finished piece of work (a world build, a policy run) as one FINISHED run.

    `curves` are per-step lists logged as `curve/<name>` with step = 1, 2, ...; returns the
    run id. Used where the work itself is cached, so the run can be recorded after it.
    """
    uri = resolve_tracking_uri(uri)
    run_id = start_run(uri, experiment_id(uri, experiment), name,
                       {**environment_tags(), **tags})
    log_run(uri, run_id, params=flatten(params), metrics=metrics,
            curves={key: {step + 1: value for step, value in enumerate(values)
                          if not math.isnan(value)}  # NaN steps (no sample) are skipped
                    for key, values in curves.items()})
    for path, text in (texts or {}).items():
        log_text(uri, run_id, text, path)
    end_run(uri, run_id)
    return run_id
