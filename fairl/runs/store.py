"""Where runs go: the tracking URI, the MLflow client for it, experiments.

Store. By default a SQLite database `mlruns/mlflow.db` with artifacts under
`mlruns/artifacts/<experiment>` (`mlruns/` is `fairl.paths.mlruns_dir()`, env FAIRL_MLRUNS);
any MLflow tracking URI by `--tracking-uri`, env FAIRL_TRACKING_URI or MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
from pathlib import Path

from fairl.paths import StoreError, mlruns_dir
from fairl.runs.watch import WatchedClient


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
def client(uri: str) -> WatchedClient:
    """The MlflowClient for `uri`, watched (one per process; a new db's schema takes seconds).

    Every call on it waits out an outage of a tracking server (fairl.runs.watch). A local
    SQLite store is opened under an fcntl lock beside it (`.mlflow.db.lock`), and its schema
    made there if new, so concurrent launches on a fresh store never race to create it; a
    half-made store (schema creation cut short) is refused (StoreError)."""
    # No network here: MLflow 3 otherwise tries to send usage telemetry.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Its "View run / View experiment" lines on every run's end (HTTP stores): 2 per trial;
    # `fairl study run` prints the runs table's link once instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient  # heavy (~2 s): only when a run is touched
    from sqlalchemy.exc import OperationalError

    if not uri.startswith("sqlite:///"):
        return WatchedClient(MlflowClient(tracking_uri=uri), uri)
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f".{database.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its holder dies
        _check_half_made(database)
        _fast_sqlite(database)
        try:
            mlflow_client = MlflowClient(tracking_uri=uri)
            mlflow_client.search_experiments(max_results=1)  # makes a new db's schema now
        except (MlflowException, OperationalError) as error:  # OperationalError: disk full, I/O
            raise StoreError(f"{database}: MLflow cannot open or create it: {_first_line(error)}"
                             "; free space if the disk is full, back the file up, then restore "
                             f"it or run `mlflow db upgrade {uri}`") from error
    return WatchedClient(mlflow_client, uri)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _check_half_made(database: Path) -> None:
    """StoreError if `database` holds a schema whose creation or upgrade was cut short."""
    if not database.exists() or database.stat().st_size == 0:
        return
    try:
        connection = sqlite3.connect(database, timeout=30)
        try:
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = (connection.execute("SELECT version_num FROM alembic_version").fetchall()
                       if "alembic_version" in tables else [])
            runs = (connection.execute("SELECT count(*) FROM runs").fetchone()[0]
                    if "runs" in tables else 0)
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{database}: not a readable SQLite database ({error}); restore it "
                         "from a backup or point --tracking-uri elsewhere") from error
    leftovers = sorted(name for name in tables if name.startswith("_alembic_tmp_"))
    if tables and (leftovers or not version):
        detail = f"leftover table {leftovers[0]}" if leftovers else "no schema version"
        action = ("it holds no runs: delete it and rerun" if not runs else
                  f"it holds {runs} runs: back it up and restore it")
        raise StoreError(f"{database}: half-made MLflow store ({detail}: creating its schema "
                         f"was cut short, e.g. by a full disk); {action}")


def check_store(uri: str) -> None:
    """StoreError unless a local SQLite store passes `PRAGMA quick_check` (damaged pages)."""
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if not database.exists():
        return
    try:
        connection = sqlite3.connect(database, timeout=30)
        try:
            rows = [row[0] for row in connection.execute("PRAGMA quick_check(5)")]
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        rows = [str(error)]
    if rows != ["ok"]:
        problems = [line for row in rows for line in str(row).splitlines()
                    if line.strip() and not line.startswith("***")] or rows
        raise StoreError(f"{database}: damaged SQLite database (quick_check: {problems[0][:200]}"
                         f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); "
                         f"stop all runs, back it up and restore it (sqlite3 {database} "
                         "'.recover' may salvage its rows)")


_FAST_SQLITE: set[str] = set()


def _fast_sqlite(database: Path) -> None:
    """WAL journal and synchronous=NORMAL for an MLflow SQLite store.

    In the default rollback-journal mode every commit fsyncs several times (~20 ms each on
    this machine's disk; a trial makes a handful of commits). WAL with synchronous=NORMAL
    commits without fsync and stays consistent; a killed process loses nothing, only a power
    cut can drop the last commits. WAL is a property of the file; synchronous is set on
    every new connection to it.
    """
    from sqlalchemy import event  # comes with mlflow; loaded with it
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


# How MLflow's UI (3.17) shows a fairl experiment. Its sidebar switch "GenAI | Model training"
# (URL query workflowType, else the browser's localStorage, else GenAI) decides whether an
# experiment opens on the GenAI overview or on its runs: the kind tag below is what older
# 3.x releases read, and MLflow's own "Machine learning" label; `runs_url` is the link that
# opens the runs table. That table shows only Source, Models and Dataset columns by default,
# whatever was logged; a "shared view" (an experiment tag `mlflow.sharedViewState.<key>` that
# the URL query viewStateShareKey=<key> loads) selects the columns a comparison needs: the
# variant, the objective (val_f1) and the test scores (fairl.runs.write's names).
VIEW_KEY = "fairl"
RUNS_VIEW = {"selectedColumns": [
    "attributes.`Dataset`", "attributes.`Models`", "params.`variant`", "metrics.`val_f1`",
    "metrics.`test_f1`", "metrics.`test_pairwise_accuracy`", "metrics.`test_starc`"]}
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development",
                   f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(RUNS_VIEW)}


def runs_url(base: str, experiment: str) -> str:
    """The MLflow UI page (server at `base`) of experiment id `experiment`'s runs table."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


def experiment_id(uri: str, name: str, tags: dict[str, str] | None = None) -> str:
    """Id of experiment `name`, created (artifacts under the store's artifact root) if missing."""
    from mlflow.exceptions import MlflowException  # heavy: see client()

    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        for key, value in EXPERIMENT_TAGS.items():  # made by an older fairl: brought up to date
            if experiment.tags.get(key) != value:
                mlflow_client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    root = artifact_root(uri)
    location = Path(root, name).as_uri() if root else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location,
                                               tags={**(tags or {}), **EXPERIMENT_TAGS})
    except MlflowException:  # another process created it first
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
