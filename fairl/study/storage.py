"""Optuna storage: journal file or RDB, the study lock, re-queueing and reaping trials, tallies.

Storage: a JournalFileBackend file `mlruns/optuna.journal` by default (several processes on
one machine; whole-record appends without fsync, see fairl.study.journal), or any RDB URL
(`postgresql://...` for several machines) with Optuna's heartbeat. Workers (`--workers K`)
are processes.

Resume, kills and orphans. Each worker loops: take the study lock, reap, count, and ask
for one trial, releasing the lock once the trial exists (so two workers never both take the
last slot, and a grid never hands one configuration to two live trials). The lock is an
fcntl lock beside a journal or SQLite file, a PostgreSQL/MySQL advisory lock otherwise; a
dead holder releases it. Reaping: a RUNNING trial whose worker process (host:pid:start,
recorded before the lock is released) is dead on this host, or whose RDB heartbeat went
stale, is set FAIL (user attr `fairl_killed`) and re-queued as a WAITING copy with the same
parameters and grid slot (system attrs `failed_trial`, `retry_history`, as Optuna's
RetryHeartbeatStaleTrialCallback does), up to MAX_RETRY times; a killed trial that a reap
left unqueued (stopped between the two) is queued by the next. A trial interrupted by
Ctrl-C/SIGTERM is re-queued the same way: the signal raises only in the trial's own code,
and waits out the worker's bookkeeping (reap, count, Optuna's ask and tell) and every call
on the storage (WholeJournalStorage, WholeRDBStorage), which a cut would leave half done
(fairl.process.interrupts). A study is done when COMPLETE trials plus FAIL trials that were
not re-queued (errors such as a diverged fit, which would fail again) reach the trial count.
At each launch (start and end), MLflow runs still RUNNING whose trial is no longer running
(or whose launcher died) are set KILLED with the reason in their `error` tag; at its start,
trials that an error of a store failed (not their configuration: user attr `fail_store`) are
re-queued too.

Outages. Every call on an RDB storage (WholeRDBStorage, the study lock's session) waits out
a database that does not answer (`rdb_unreachable`: a refused, reset or terminated
connection, as in a restart) up to FAIRL_STORE_TIMEOUT (fairl.outage); a tell retried after
its first try went in is not made again, and no heartbeat counts as stale while this process
sees the database away or just back (no worker could write one then).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import importlib.util
import inspect
import os
import re
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages._heartbeat import (
    BaseHeartbeat,
    get_heartbeat_thread,
    is_heartbeat_enabled,
)
from optuna.storages.journal import JournalStorage
from optuna.trial import TrialState

from fairl import outage
from fairl.config import ConfigError
from fairl.paths import mlruns_dir, redact
from fairl.process import interrupts
from fairl.runs.provenance import worker_alive, worker_identity
from fairl.study.journal import check_journal, journal_file

MAX_RETRY = 3  # re-queues of a configuration whose worker died, before it counts as failed
HEARTBEAT_SECONDS = 10  # RDB storages: trial heartbeat, and stale after GRACE_SECONDS
GRACE_SECONDS = 30


def default_storage() -> str:
    return str(mlruns_dir() / "optuna.journal")


def resolve_storage(storage: str | None = None) -> str:
    """Flag, then FAIRL_STORAGE, then the journal file mlruns/optuna.journal."""
    return storage or os.environ.get("FAIRL_STORAGE") or default_storage()


def is_rdb(storage: str) -> bool:
    return "://" in storage


def sqlalchemy_url(storage: str) -> str:
    """postgres(ql):// -> the installed driver: SQLAlchemy 2.1 defaults to psycopg 3, which
    fairl does not require (psycopg2-binary is in the dev extras)."""
    scheme, sep, rest = storage.partition("://")
    if scheme in ("postgres", "postgresql"):
        driver = "" if importlib.util.find_spec("psycopg") else "+psycopg2"
        return f"postgresql{driver}{sep}{rest}"
    return storage


def open_storage(storage: str, study: str | None = None):
    """Optuna storage for a URL (RDB, with heartbeat) or a journal file path.

    A journal with a torn or unreadable record is refused (StoreError naming the byte offset
    and `fairl study repair`; `study` names the study in that command)."""
    _quiet_optuna()
    if is_rdb(storage):
        # Hosts started at once would all create Optuna's tables on a fresh database and all
        # but one fail (duplicate alembic_version): the first creates them under a lock.
        lock = StudyLock(storage, "optuna-schema")
        try:
            with lock:
                return outage.wait_out(rdb_store(storage), lambda: WholeRDBStorage(
                    sqlalchemy_url(storage), engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                    heartbeat_stale_trial_callback=requeue), rdb_unreachable)
        finally:
            lock.close()
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    backend = journal_file(str(storage))
    check_journal(backend, study)
    return WholeJournalStorage(backend)


def _whole_calls(cls: type, watched: bool = False, private: tuple[str, ...] = ()) -> dict:
    """`cls`'s public methods and those named in `private`, each run with a stop signal
    waiting (fairl.process.interrupts) until it returns; `watched`: each waits out an outage
    of the database (fairl.outage)."""

    def whole(name, method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            with interrupts(False):
                if watched:
                    return _watched_call(self, name, method, args, kwargs)
                return method(self, *args, **kwargs)
        return call

    return {name: whole(name, getattr(cls, name)) for name in dir(cls)
            if (not name.startswith("_") or name in private)
            and inspect.isfunction(inspect.getattr_static(cls, name))}


def _watched_call(storage, name: str, method, args, kwargs):
    """An RDB storage call through fairl.outage.wait_out. A tell retried after its first try
    went in is not made again (Optuna would refuse it: the trial is finished); a heartbeat
    that gives up returns (its thread goes on; the trial's own calls stop the launch)."""
    already = None
    if name == "set_trial_state_values":
        bound = inspect.signature(method).bind(storage, *args, **kwargs).arguments
        trial_id, state = bound["trial_id"], bound["state"]

        def already():
            stored = optuna.storages.RDBStorage.get_trial(storage, trial_id)
            return True if stored.state == state and stored.state.is_finished() else None
    store = rdb_store(storage.url)
    try:
        return outage.wait_out(store, lambda: method(storage, *args, **kwargs), rdb_unreachable,
                               already)
    except outage.StoreUnreachable:
        if name == "record_heartbeat":
            return None
        raise
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        outage.mark_refused(error, store)  # the database refused it: not a trial's fault
        raise


def _stale_unless_recovering(storage, study_id: int) -> list[int]:
    """RDBStorage's stale trials, none while this process sees the database in an outage or
    out of one for less than a grace period: no worker could write its heartbeat then."""
    store = rdb_store(storage.url)
    if outage.recovered_within(store, GRACE_SECONDS + HEARTBEAT_SECONDS):
        return []
    return outage.wait_out(store, lambda: optuna.storages.RDBStorage._get_stale_trial_ids(
        storage, study_id), rdb_unreachable)


# Every call on a study's storage ends whole, whatever stop signal lands in it; the signal is
# raised as the call returns. A KeyboardInterrupt inside Optuna's journal lock breaks the
# lock's own cleanup: one in its release unlinks the renamed lock file twice (FileNotFoundError:
# the trial counted failed instead of re-queued; CI, stop 23; test_faults reproduces it). Read
# in Optuna's code, not reproduced: one in its acquire's wait "releases" the lock another
# process holds, and one in a replay skips a record in this process's view of the study
# (a record is counted read before it is applied). Blocking calls (a lock held by another
# process, a slow database) wait for the signal as well: SIGKILL still stops them.
WholeJournalStorage = type("WholeJournalStorage", (JournalStorage,),
                           {"__module__": __name__, **_whole_calls(JournalStorage)})
# Optuna wraps an RDB storage in its _CachedStorage, which calls these private methods too.
RDB_PRIVATE_CALLS = ("_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials")
WholeRDBStorage = type("WholeRDBStorage", (optuna.storages.RDBStorage,),
                       {"__module__": __name__, "_get_stale_trial_ids": _stale_unless_recovering,
                        **_whole_calls(optuna.storages.RDBStorage, True, RDB_PRIVATE_CALLS)})

# An RDB that does not answer (fairl.outage): the connection refused, reset or cut (a restart
# terminates every session), the server starting up or shutting down. Other database errors
# (no such database, a refused password, bad data) are real and raised at once.
LOST_CONNECTION = ("connection refused", "could not connect", "server closed the connection",
                   "terminating connection", "the database system is", "ssl syscall",
                   "eof detected", "connection reset", "no connection to the server",
                   "connection already closed", "connection not open", "could not receive data",
                   "could not send data", "timeout expired", "timed out", "lost connection",
                   "gone away", "can't connect")
NOT_LOST = ("does not exist", "authentication failed", "password", "permission denied",
            "pg_hba.conf")
LOST_SQLSTATES = ("57P01", "57P02", "57P03")  # admin / crash shutdown, cannot connect now


def rdb_store(storage: str) -> str:
    """How the watchdog's lines name an RDB storage (as given: without SQLAlchemy's driver)."""
    url = re.sub(r"^(\w+)\+\w+://", r"\1://", str(storage))
    return f"Optuna storage {redact(url)}"


def rdb_unreachable(error: BaseException) -> str | None:
    """Why the database did not answer (a short reason), or None for a real error."""
    for link in outage.chain(error):
        if isinstance(link, outage.StoreUnreachable):
            return None
        if isinstance(link, sqlalchemy.exc.DBAPIError):
            text = (str(link.orig if link.orig is not None else link).strip().splitlines()
                    or [type(link).__name__])[0].strip()
            code = getattr(link.orig, "pgcode", None)
            if link.connection_invalidated or (code and (code.startswith("08")
                                                         or code in LOST_SQLSTATES)):
                return text[:160]
            lowered = text.lower()
            if not code and any(sign in lowered for sign in LOST_CONNECTION) \
                    and not any(sign in lowered for sign in NOT_LOST):
                return text[:160]
        elif isinstance(link, (ConnectionError, TimeoutError)):
            return " ".join(str(link).split())[:160] or type(link).__name__
    return None


def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures: one line from objective()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class StudyLock:
    """Cross-process lock around reap + count + ask of one study (released by a dead holder)."""

    def __init__(self, storage: str, study: str):
        self.storage, self.study, self.held = storage, study, False
        self._file = self._connection = None
        self._key = int.from_bytes(hashlib.sha256(f"fairl:{study}".encode()).digest()[:8],
                                   "big", signed=True)
        self.kind = "file"
        if is_rdb(storage):
            scheme = storage.split("://", 1)[0].split("+", 1)[0]
            if scheme == "sqlite":
                path = Path(storage.split("///", 1)[1])
            elif scheme in ("postgresql", "postgres", "mysql", "mariadb"):
                self.kind, path = scheme, None
            else:
                raise ConfigError(f"--storage {redact(storage)}: unsupported database "
                                  "(use a journal file, sqlite, postgresql or mysql)")
        else:
            path = Path(storage)
        if path is not None:
            self._path = path.with_name(f".{path.name}.{study}.lock")

    def acquire(self) -> None:
        if self.held:
            return
        if self.kind == "file":
            self._file = open(self._path, "a")  # noqa: SIM115 (held across calls)
            fcntl.flock(self._file, fcntl.LOCK_EX)
        else:
            self._sql("SELECT pg_advisory_lock(:key)" if self.kind.startswith("postgres")
                      else "SELECT GET_LOCK(:key, -1)")
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self.kind == "file":
            self._file.close()  # closing drops the flock
            self._file = None
        elif self._connection is not None:  # once: a lost session took the lock with it
            self._sql("SELECT pg_advisory_unlock(:key)" if self.kind.startswith("postgres")
                      else "SELECT RELEASE_LOCK(:key)", wait=False)

    def _sql(self, statement: str, wait: bool = True) -> None:
        """`statement` on the lock's own session, waiting out an outage of the database
        (`wait`); a lost session is dropped (the server released its locks with it)."""
        key = self._key if self.kind.startswith("postgres") else f"fairl:{self.study}"[:64]

        def run() -> None:
            if self._connection is None:
                engine = sqlalchemy.create_engine(sqlalchemy_url(self.storage),
                                                  poolclass=sqlalchemy.pool.NullPool,
                                                  isolation_level="AUTOCOMMIT")
                self._connection = engine.connect()
            try:
                self._connection.execute(sqlalchemy.text(statement), {"key": key}).fetchall()
            except sqlalchemy.exc.DBAPIError as error:
                if rdb_unreachable(error) is not None:
                    self._drop()
                raise

        if wait:
            outage.wait_out(rdb_store(self.storage), run, rdb_unreachable)
            return
        try:
            run()
        except sqlalchemy.exc.DBAPIError as error:
            if rdb_unreachable(error) is None:
                raise

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except sqlalchemy.exc.DBAPIError:
                pass

    def close(self) -> None:
        self.release()
        self._drop()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *_):
        self.release()


def requeue(study, trial) -> bool:
    """Queue a WAITING copy of a killed trial (same params and grid slot), up to MAX_RETRY;
    False when it was tried MAX_RETRY times (it then counts as failed)."""
    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    if len(history) > MAX_RETRY:
        return False
    system_attrs = {**trial.system_attrs, "failed_trial": history[0], "retry_history": history}
    system_attrs.pop("fail_reason", None)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params,
        distributions=trial.distributions, system_attrs=system_attrs))
    return True


def reap_trials(study, on_killed=None, *, busy: frozenset[int] = frozenset(),
                retry_store_failures: bool = False) -> list[str]:
    """Fail and re-queue trials whose worker died (or that were interrupted); call under lock.

    `on_killed(trial, reason)` gives each trial failed here its MLflow run, KILLED with the
    reason (made if the worker died before it started one), and returns the run id. The
    caller runs no trial while it reaps, so a trial left RUNNING by its own process (a write
    that failed mid-trial) is reaped too, except the trial numbers in `busy` (a batched
    worker's trials still being logged); one process runs one launch at a time.
    `retry_store_failures` (a launch's start): trials failed by an error a store raised (not
    their configuration's; user attr fail_store) are re-queued too."""
    messages, me = [], worker_identity()
    stale = _stale_trial_ids(study)
    trials = study.get_trials(deepcopy=False)
    requeued = _requeued(trials)
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            worker = trial.user_attrs.get("worker")
            if trial._trial_id in stale:
                reason = f"worker {worker}: its RDB heartbeat went stale"
            elif worker == me and trial.number in busy:
                continue
            elif worker == me:
                reason = f"worker {worker} (this process) stopped it midway"
            elif worker_alive(worker) is not False:
                continue
            else:
                reason = (f"worker {worker} died during the trial" if worker
                          else "worker died before the trial started")
            if not _fail_dead(study, trial, reason, on_killed):
                continue
        elif trial.state == TrialState.FAIL and trial.number not in requeued and (
                trial.user_attrs.get("fairl_interrupted") or "fairl_killed" in trial.user_attrs):
            # Interrupted, or failed here by an earlier reap that stopped before its re-queue.
            reason = "interrupted" if trial.user_attrs.get("fairl_interrupted") else \
                trial.user_attrs["fairl_killed"]
        elif retry_store_failures and store_failures([trial], requeued):
            reason = f"failed by {trial.user_attrs['fail_store']}, not its configuration"
        else:
            continue
        if requeue(study, study._storage.get_trial(trial._trial_id)):
            messages.append(f"trial {trial.number}: {reason}; re-queued")
        elif trial.state == TrialState.RUNNING:  # (the snapshot's state) failed by this reap
            messages.append(f"trial {trial.number}: {reason}; failed "
                            f"(re-queued {MAX_RETRY} times already)")
    return messages


def _stale_trial_ids(study) -> set[int]:
    """Ids of RUNNING trials whose RDB heartbeat went stale (as optuna.fail_stale_trials, whose
    private helper it uses: fairl then fails them itself, their runs KILLED first)."""
    storage = study._storage
    if not (isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)):
        return set()
    return set(storage._get_stale_trial_ids(study._study_id))


def _fail_dead(study, trial, reason: str, on_killed) -> bool:
    """Set FAIL a RUNNING trial whose worker died, its run KILLED first; False if it ended."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "fairl_killed", reason)
        if on_killed is not None:
            run_id = on_killed(trial, reason)
            if run_id and "mlflow_run_id" not in trial.user_attrs:
                storage.set_trial_user_attr(trial._trial_id, "mlflow_run_id", run_id)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def store_failures(trials, requeued: set[int] | None = None) -> list:
    """FAIL trials, not re-queued, that an error of a store failed (not their configuration)."""
    requeued = _requeued(trials) if requeued is None else requeued
    return [trial for trial in trials if trial.state == TrialState.FAIL
            and "fail_store" in trial.user_attrs and trial.number not in requeued]


def _requeued(trials) -> set[int]:
    """Numbers of failed trials whose configuration was queued again."""
    return {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}


@dataclasses.dataclass
class Tally:
    """Trial counts of a study as fairl sees them."""

    complete: int = 0
    failed: int = 0  # FAIL and not re-queued: counts as done
    requeued: int = 0  # FAIL whose configuration was queued again
    running: int = 0
    waiting: int = 0
    pruned: int = 0  # stopped early by the study's pruner: done, never failed

    @property
    def done(self) -> int:
        return self.complete + self.failed + self.pruned


def tally(trials) -> Tally:
    requeued = _requeued(trials)
    counts = Tally()
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            counts.complete += 1
        elif trial.state == TrialState.RUNNING:
            counts.running += 1
        elif trial.state == TrialState.WAITING:
            counts.waiting += 1
        elif trial.state == TrialState.PRUNED:
            counts.pruned += 1
        elif trial.number in requeued:
            counts.requeued += 1
        else:
            counts.failed += 1
    return counts


def open_study(study, storage: str, target: int):
    """Create or load the Optuna study; refuse a study of the same name with another spec."""
    study_obj = optuna.create_study(
        study_name=study.name, storage=open_storage(storage), load_if_exists=True,
        directions=study.spec.directions)
    attrs = study_obj.user_attrs
    fingerprint = study.fingerprint()
    if attrs.get("fairl_fingerprint", fingerprint) != fingerprint:
        raise ConfigError(
            f"{study.path}: study {study.name!r} already exists in {redact(storage)} with "
            "a different configuration (world/fit/variants/search/sampler/seeds/objectives); "
            "give the changed study a new `name:` or use another --storage")
    if [d.name.lower() for d in study_obj.directions] != study.spec.directions:
        raise ConfigError(f"{study.path}: objectives: directions differ from the stored study")
    if "fairl_fingerprint" not in attrs:
        study_obj.set_user_attr("fairl_fingerprint", fingerprint)
        study_obj.set_user_attr("fairl_metrics", study.spec.metrics)
        study_obj.set_user_attr("fairl_file", study.path)
    study_obj.set_user_attr("fairl_target", target)
    return study_obj


def start_heartbeat(study, trial):
    """RDB storages: the trial's heartbeat, until `.join()` (study.optimize keeps one for the
    trial it runs; a batched worker asks and tells its trials itself)."""
    thread = get_heartbeat_thread(trial._trial_id, study._storage)
    thread.start()
    return thread
