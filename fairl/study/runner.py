"""Running a study: the launch and its worker loop; one trial is fairl.study.trial.

The trial path, top to bottom:
`run_study` (validate, open the stores, reap, start the launch run, run the workers)
→ `work` (per worker: lock, reap, count, ask Optuna for one trial)
→ the study's `objective` (one trial: in fairl.study.trial its config from the sampler,
`evaluate`, one MLflow run; a re-RLHF study's cell in fairl.study.rerlhf). Either kind of
study file runs here (fairl.study.kinds: what the runner asks each).

MLflow: one experiment per study, one parent run per launch, one child run per trial with
the per-seed numbers inside it (fairl.runs.write), so the runs table compares
configurations directly. Trial and run point at each other: the trial's user attr
`mlflow_run_id`, the run's tags `trial_number` / `optuna_study`. Workers (`--workers K`) are
processes; a study is done when COMPLETE trials plus FAIL trials that were not re-queued
reach the trial count (fairl.study.storage says how killed trials are re-queued).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from tqdm import tqdm

from fairl import outage
from fairl.config import ConfigError
from fairl.devices import numpy_blas_threads
from fairl.outage import StoreUnreachable
from fairl.paths import redact
from fairl.process import interrupts, stop_pending
from fairl.runs import write as runs
from fairl.runs.provenance import environment_tags, worker_alive, worker_identity
from fairl.runs.reap import reap_runs
from fairl.runs.store import experiment_id, resolve_tracking_uri
from fairl.runs.ui import runs_link
from fairl.study.batch import work_batched
from fairl.study.files import on_world
from fairl.study.kinds import IRLStudy, RerlhfStudy, as_kind, load_kind
from fairl.study.links import check_stores, kill_runless, run_killer
from fairl.study.storage import (
    StudyLock,
    Tally,
    is_rdb,
    open_storage,
    open_study,
    reap_trials,
    resolve_storage,
    store_failures,
    tally,
)
from fairl.study.trial import DISK_ERRNOS, StoreFault, WorkerContext, _torch_threads
from fairl.study.worlds import SuiteWorld


@dataclasses.dataclass
class LaunchReport:
    """What a launch did and where the study stands."""

    study: str
    target: int
    tally: Tally
    launch_run: str
    experiment: str
    status: str
    messages: list[str]


# --- launch --------------------------------------------------------------------------------------

def run_study(path: str | Path, trials: int | None = None, workers: int = 1,
              storage: str | None = None, tracking_uri: str | None = None,
              progress: bool = True, batch: int | None = None,
              world: SuiteWorld | None = None) -> LaunchReport:
    """`fairl study run`: validate, check the stores, reap leftovers, run trials, report.

    `world`: run the study on it (fairl.study.worlds; StudySkipped if it cannot)."""
    raw, notes = on_world(path, world)  # its own world, or `world`; tagged world_id/hash
    study = load_kind(path, raw)  # every config error surfaces here, before any store is touched
    target = _check_launch(study, trials, workers, batch)
    outage.store_timeout()  # a bad FAIRL_STORE_TIMEOUT is told now
    storage = resolve_storage(storage)
    uri = resolve_tracking_uri(tracking_uri)
    check_stores(study.name, storage, uri)  # before the study exists: nothing half-made
    study_obj = open_study(study, storage, target)
    experiment = experiment_id(
        uri, study.name, {"study_file": study.path, "description": study.spec.description[:5000],
                          "optuna_storage": redact(storage)})
    study_obj.set_user_attr("mlflow_experiment_id", experiment)
    study_obj.set_user_attr("mlflow_tracking_uri", redact(uri))
    print(f"{study.name}: runs table {runs_link(uri, experiment)}", flush=True)
    env_tags = environment_tags()
    launch_run = runs.start_run(
        uri, experiment, time.strftime("launch-%Y%m%d-%H%M%S"),
        {"kind": "launch", "study": study.name, **study.launch_tags,
         "world": study.spec.world["name"], "worker": worker_identity(),
         "optuna_study": study.name, "optuna_storage": redact(storage),
         "workers": str(workers), **env_tags, **study.spec.tags})
    runs.log_run(uri, launch_run, params={"trials": target, "workers": workers,
                                          "sampler": study.sampler_name})
    runs.log_text(uri, launch_run, yaml.safe_dump(study.raw, sort_keys=False), "study.yaml")
    context = WorkerContext(str(path), study.raw, storage, uri, experiment, launch_run, target,
                            workers=workers, batch=batch or study.default_batch, env_tags=env_tags)
    messages = notes + _reap(study_obj, context, retry_store_failures=True)
    status, counts, fault = runs.FAILED, Tally(), None
    try:
        messages += _launch(study_obj, context, workers, progress)
        unfinished, notes = _finish(study_obj, context)
        messages += notes
        status = runs.FAILED if unfinished else runs.FINISHED
    except KeyboardInterrupt:
        status = runs.KILLED
        raise
    except StoreUnreachable as error:  # the launch stops as for a disk error; said below
        fault = error
    finally:
        # After an outage the stores are tried once each (fairl.outage): what is away is
        # left to the next launch (the trial's re-queue, its run's KILLED, this run's end).
        reaped = _unless_away(fault, lambda: _reap(study_obj, context), [])
        messages += reaped
        counts = _unless_away(fault, lambda: tally(study_obj.get_trials(deepcopy=False)), counts)
        if status == runs.FAILED and counts.done < target:
            messages.append(f"study stopped at {counts.done}/{target} trials; rerun to continue")
        summary = {"trials_complete": counts.complete, "trials_failed": counts.failed,
                   "trials_requeued": counts.requeued, "trials_pruned": counts.pruned}
        summary.update(_unless_away(fault, lambda: _best_values(study_obj, study.spec.metrics), {}))
        if status == runs.FINISHED and (faulted := _store_failures(study_obj)):
            status = runs.FAILED  # not the configurations' fault: the exit code says so
            messages.append(faulted)
        if status != runs.KILLED and fault is None:
            messages += study.conclude(uri, launch_run)
        _unless_away(fault, lambda: runs.log_run(uri, launch_run, metrics=summary))
        _unless_away(fault, lambda: runs.end_run(uri, launch_run, status))
    if fault is not None:
        requeued = [line.split(":")[0] for line in reaped if line.endswith("re-queued")]
        raise StoreUnreachable(fault.store, f"{fault}; the launch stopped, "
                               f"{', '.join(requeued) or 'the waiting trial'} re-queued (not "
                               "failed); rerun the same command once it answers") from fault
    return LaunchReport(study.name, target, counts, launch_run, experiment, status, messages)


def _unless_away(fault, call, default=None):
    """`call()`; `default` if a store the launch stopped on (`fault`) still does not answer."""
    try:
        return call()
    except StoreUnreachable:
        if fault is None:
            raise
        return default


def _store_failures(study_obj) -> str | None:
    """The note on trials that failed by a store's error, not their configuration's; None if
    there are none. The next launch re-queues them (fairl.study.storage.reap_trials)."""
    failed = store_failures(study_obj.get_trials(deepcopy=False))
    if not failed:
        return None
    first = failed[0]
    return (f"{len(failed)} trial(s) FAILED for a reason that is not their configuration: "
            f"{first.user_attrs['fail_store']} raised an error (trial {first.number}: "
            f"{first.user_attrs.get('fail_reason', '?')[:200]}); rerun the same command to "
            "run them again")


def _check_launch(study: IRLStudy | RerlhfStudy, trials: int | None, workers: int,
                  batch: int | None) -> int:
    """The launch's trial count; --trials and --workers checked against the study."""
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1 (got {workers})")
    if batch is not None and not 1 <= batch <= study.max_batch:
        raise ConfigError(f"--batch: must be in 1..{study.max_batch} for {study.path} "
                          f"(got {batch})")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials: must be >= 1 (got {trials})")
    target = trials or study.trials
    if study.is_grid and target > study.grid_size:
        raise ConfigError(f"--trials: {target} exceeds the grid size {study.grid_size} of "
                          f"{study.path} (a grid runs each configuration once)")
    return target


def _reap(study_obj, context: WorkerContext, retry_store_failures: bool = False) -> list[str]:
    """Re-queue trials of dead workers (their runs KILLED), then KILLED orphaned MLflow runs."""
    lock = StudyLock(context.storage, study_obj.study_name)
    try:
        with lock, interrupts(False):  # a reap is never cut between a FAIL and its re-queue
            messages = reap_trials(study_obj, _run_killer(context, study_obj.study_name),
                                   retry_store_failures=retry_store_failures)
            trials = study_obj.get_trials(deepcopy=False)
            states = {trial.number: (trial.state.name, trial.user_attrs.get("fairl_killed"))
                      for trial in trials}
            try:
                if retry_store_failures:  # a launch's start: trials re-queued with no run
                    messages += _kill_runless(context, study_obj.study_name, trials)
                return messages + reap_runs(context.tracking_uri, context.experiment, states)
            except StoreUnreachable:  # the trials are re-queued; their runs wait for the server
                return messages
    finally:
        lock.close()


def _kill_runless(context: WorkerContext, study: str, trials) -> list[str]:
    return kill_runless(context.tracking_uri, context.experiment, context.launch_run, study,
                        context.storage, context.env_tags, trials)


def _run_killer(context: WorkerContext, study: str):
    return run_killer(context.tracking_uri, context.experiment, context.launch_run, study,
                      context.storage, context.env_tags)


def _finish(study_obj, context: WorkerContext) -> tuple[bool, list[str]]:
    """After this launch's workers: run what was re-queued, wait for other launchers' live
    trials (reaping those that die); (unfinished, notes). Never a false "stopped"."""
    while True:
        _reap(study_obj, context)
        trials = study_obj.get_trials(deepcopy=False)
        counts = tally(trials)
        if counts.done >= context.target:
            return False, []
        if counts.waiting:
            work(dataclasses.replace(context, workers=1))
            continue
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if not running:
            return True, []
        remote = [t for t in running if worker_alive(t.user_attrs.get("worker")) is None]
        if remote and len(remote) == len(running) and not is_rdb(context.storage):
            # No heartbeat on a journal: their hosts' launchers reap them if they died.
            workers = sorted({str(t.user_attrs.get("worker")) for t in remote})
            note = (f"{len(remote)} trial(s) still run under another launcher "
                    f"({', '.join(workers)[:300]}); it finishes them")
            return False, [note]
        time.sleep(1)


def _launch(study_obj, context: WorkerContext, workers: int, progress: bool) -> list[str]:
    """Run the workers (in this process when there is one); returns problems seen."""
    counts = tally(study_obj.get_trials(deepcopy=False))
    bar = tqdm(total=context.target, initial=min(counts.done, context.target),
               desc=study_obj.study_name, unit="trial", disable=not progress, dynamic_ncols=True)

    def show(counts: Tally) -> None:
        bar.n = min(counts.done, context.target)
        bar.set_postfix(failed=counts.failed, pruned=counts.pruned, running=counts.running,
                        refresh=False)
        bar.refresh()

    try:
        if workers == 1:
            work(context, on_trial=show)
            return []
        processes = [_start_worker(dataclasses.replace(context, worker_index=index))
                     for index in range(workers)]
        try:
            while any(process.poll() is None for process in processes):
                time.sleep(0.5)
                show(tally(study_obj.get_trials(deepcopy=False)))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                process.wait()
        show(tally(study_obj.get_trials(deepcopy=False)))
        if any(process.returncode == 3 for process in processes):  # a store stayed away
            outage.stop_waiting()  # this launch's cleanup tries each store once
            raise StoreUnreachable("a store", "a worker stopped: a store did not answer "
                                   "within FAIRL_STORE_TIMEOUT (its line above)")
        # Their trials were re-queued (by the other workers or _finish): a note, not a failure.
        return [f"worker {index} (pid {process.pid}) exited with {process.returncode}"
                for index, process in enumerate(processes) if process.returncode != 0]
    finally:
        bar.close()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _start_worker(context: WorkerContext) -> subprocess.Popen:
    # The cores split among the workers for numpy's BLAS too (torch: worker.main), so K
    # workers do not each spin a thread per core. A value the user set wins.
    threads = str(max(1, (os.cpu_count() or 1) // context.workers))
    env = {**{name: threads for name in THREAD_VARIABLES}, **os.environ}
    # -P: the working directory is not put on sys.path, so a local file cannot shadow a module.
    return subprocess.Popen(
        [sys.executable, "-P", "-c", "from fairl.study.worker import main; main()",
         json.dumps(dataclasses.asdict(context))], env=env)


def _best_values(study_obj, metrics: list[str]) -> dict[str, float]:
    complete = [t for t in study_obj.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete or len(metrics) != 1:
        return {}
    return {f"best_{metrics[0]}": study_obj.best_value}


# --- a worker ------------------------------------------------------------------------------------

def make_sampler(study, offset: int, batched: bool = False):
    """The study's sampler (fairl.study.kinds; a study loaded by fairl.study.spec is an IRL one)."""
    return as_kind(study).sampler(offset, batched)


def work(context: WorkerContext, on_trial=None) -> Tally:
    """Run trials until the study reaches its count; `on_trial(tally)` after each."""
    study_def = load_kind(context.path, context.raw)
    storage = open_storage(context.storage)
    existing = optuna.load_study(study_name=study_def.name, storage=storage)
    offset = len(existing.get_trials(deepcopy=False)) + 1000 * context.worker_index
    batched = context.batch > 1  # seeds side by side: a trial reports rounds, not seed-rounds
    study = optuna.load_study(
        study_name=study_def.name, storage=storage,
        sampler=make_sampler(study_def, offset, batched), pruner=study_def.pruner(batched))
    lock = StudyLock(context.storage, study_def.name)
    on_killed = _run_killer(context, study_def.name)
    # Everything imported so far (torch, mlflow, sqlalchemy: ~0.5 M objects) leaves the
    # collector's view; full collections otherwise stall MLflow's many small ORM objects.
    gc.freeze()
    if batched:
        try:
            with numpy_blas_threads(_torch_threads()):
                return work_batched(context, study_def, study, lock, on_killed, on_trial)
        except StoreFault as fault:  # as below: the launch stops, the trials are re-queued
            raise fault.error from None
        finally:
            outage.set_task(None)
    parent = os.getppid()
    try:
        with numpy_blas_threads(_torch_threads()):  # fairl.devices: why
            while context.workers == 1 or os.getppid() == parent:
                # A stop signal waits out the bookkeeping (a reap half done, an ask or a tell
                # cut midway: Optuna then fails on its own state); the trial takes it (objective).
                with lock, interrupts(False):  # waiting for the lock stays interruptible
                    reap_trials(study, on_killed)
                    counts = tally(study.get_trials(deepcopy=False))
                    if stop_pending() or (counts.waiting == 0
                                          and counts.done + counts.running >= context.target):
                        break  # a waiting stop signal is raised as the block ends
                    try:
                        study.optimize(lambda trial: _stop_on_disk_error(
                            study_def.objective, trial, context, lock), n_trials=1,
                            catch=(Exception,))
                    except StoreFault as fault:
                        raise fault.error from None
                    except Exception as error:  # e.g. Optuna's tell, on a database away
                        if (unreachable := outage.given_up(error)) is not None:
                            raise unreachable from None
                        raise
                    finally:
                        outage.set_task(None)
                if on_trial is not None:
                    on_trial(tally(study.get_trials(deepcopy=False)))
    finally:
        lock.close()
    return tally(study.get_trials(deepcopy=False))


def _stop_on_disk_error(function, *args):
    """function(*args), a disk error (full, read-only) or a store that stayed away raised as
    StoreFault: the launch stops and the trial, left RUNNING, is re-queued by the next reap
    instead of counted as failed."""
    try:
        return function(*args)
    except OSError as error:
        if error.errno in DISK_ERRNOS:
            raise StoreFault(error) from error
        raise
    except StoreUnreachable as error:
        raise StoreFault(error) from error


