"""Running a study: launch, worker loop, and one trial from study file to MLflow run.

The trial path, top to bottom in this module:
`run_study` (validate, open the stores, reap, start the launch run, run the workers)
→ `work` (per worker: lock, reap, count, ask Optuna for one trial)
→ `objective` (the trial: its config from the sampler, `fit_trial`, one MLflow run)
→ `fit_trial` (every seed: `fairl.experiment.run_experiment` = compose + `fairl.irl.fit` +
metrics) → `log_trial` (params, metrics, curves, artifacts in one batch, via `fairl.runs`).

MLflow: one experiment per study, one parent run per launch, one child run per trial with
the per-seed numbers inside it (fairl.runs.write), so the runs table compares
configurations directly. Trial and run point at each other: the trial's user attr
`mlflow_run_id`, the run's tags `trial_number` / `optuna_study`. Workers (`--workers K`) are
processes; a study is done when COMPLETE trials plus FAIL trials that were not re-queued
reach the trial count (fairl.study.storage says how killed trials are re-queued).
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from tqdm import tqdm

from fairl.config import ConfigError
from fairl.devices import numpy_blas_single_threaded
from fairl.experiment import run_experiment
from fairl.irl.config import FitConfig
from fairl.paths import redact
from fairl.process import interrupts, stop_pending
from fairl.runs import write as runs
from fairl.runs.provenance import environment_tags, worker_alive, worker_identity
from fairl.runs.read import MissingStudy, load_study_runs
from fairl.runs.reap import reap_runs
from fairl.runs.store import experiment_id, resolve_tracking_uri
from fairl.study.links import check_stores, run_killer
from fairl.study.pruning import Pruned, TrialMonitor, make_pruner
from fairl.study.references import reference_metrics
from fairl.study.spec import Study, TrialConfig, load_study, resolve, suggest
from fairl.study.storage import (
    StudyLock,
    Tally,
    is_rdb,
    open_storage,
    open_study,
    reap_trials,
    resolve_storage,
    tally,
)
from fairl.study.verdicts import row_metrics, study_rows, verdicts_json
from fairl.worlds import load_world

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


class StoreFault(BaseException):
    """A disk error inside a trial: not an Exception, so Optuna neither catches it nor fails
    the trial (work() raises the OSError itself again)."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


@dataclasses.dataclass
class WorkerContext:
    """Everything a worker process needs (JSON-serialisable)."""

    path: str
    raw: dict[str, Any]
    storage: str
    tracking_uri: str
    experiment: str
    launch_run: str
    target: int
    worker_index: int = 0
    workers: int = 1
    env_tags: dict[str, str] = dataclasses.field(default_factory=dict)


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
              progress: bool = True) -> LaunchReport:
    """`fairl study run`: validate, check the stores, reap leftovers, run trials, report."""
    study = load_study(path)  # every config error surfaces here, before any store is touched
    target = _check_launch(study, trials, workers)
    storage = resolve_storage(storage)
    uri = resolve_tracking_uri(tracking_uri)
    check_stores(study.name, storage, uri)  # before the study exists: nothing half-made
    study_obj = open_study(study, storage, target)
    experiment = experiment_id(
        uri, study.name, {"study_file": study.path, "description": study.spec.description[:5000],
                          "optuna_storage": redact(storage)})
    study_obj.set_user_attr("mlflow_experiment_id", experiment)
    study_obj.set_user_attr("mlflow_tracking_uri", redact(uri))
    env_tags = environment_tags()
    launch_run = runs.start_run(
        uri, experiment, time.strftime("launch-%Y%m%d-%H%M%S"),
        {"kind": "launch", "study": study.name, "ablation": study.spec.ablation,
         "world": study.spec.world["name"], "worker": worker_identity(),
         "optuna_study": study.name, "optuna_storage": redact(storage),
         "workers": str(workers), **env_tags, **study.spec.tags})
    runs.log_run(uri, launch_run, params={"trials": target, "workers": workers,
                                          "sampler": study.spec.sampler.type})
    runs.log_text(uri, launch_run, yaml.safe_dump(study.raw, sort_keys=False), "study.yaml")
    context = WorkerContext(str(path), study.raw, storage, uri, experiment, launch_run, target,
                            workers=workers, env_tags=env_tags)
    messages = _reap(study_obj, context)
    status, counts = runs.FAILED, Tally()
    try:
        messages += _launch(study_obj, context, workers, progress)
        unfinished, notes = _finish(study_obj, context)
        messages += notes
        status = runs.FAILED if unfinished else runs.FINISHED
    except KeyboardInterrupt:
        status = runs.KILLED
        raise
    finally:
        messages += _reap(study_obj, context)
        counts = tally(study_obj.get_trials(deepcopy=False))
        if status == runs.FAILED and counts.done < target:
            messages.append(f"study stopped at {counts.done}/{target} trials; rerun to continue")
        summary = {"trials_complete": counts.complete, "trials_failed": counts.failed,
                   "trials_requeued": counts.requeued, "trials_pruned": counts.pruned}
        summary.update(_best_values(study_obj, study.spec.metrics))
        if status != runs.KILLED:
            messages += conclude(study, uri, launch_run)
        runs.log_run(uri, launch_run, metrics=summary)
        runs.end_run(uri, launch_run, status)
    return LaunchReport(study.name, target, counts, launch_run, experiment, status, messages)


def conclude(study: Study, uri: str, launch_run: str) -> list[str]:
    """The launch run's verdicts (fairl.study.verdicts) and references; problems as messages."""
    messages, references, rows = [], {}, []
    try:
        references = reference_metrics(study.spec)
    except Exception as error:  # noqa: BLE001 (the trials are logged; report, do not fail)
        messages.append(f"reference metrics not computed: {runs.error_line(error)}")
    try:
        source = load_study_runs.__wrapped__(uri, study.name, study.path)  # not the cache
        rows = study_rows(source)
    except MissingStudy:
        pass  # no finished trial: nothing to compare
    except Exception as error:  # noqa: BLE001
        messages.append(f"verdicts not computed: {runs.error_line(error)}")
    runs.log_run(uri, launch_run, metrics={**references, **row_metrics(rows)})
    runs.log_text(uri, launch_run, verdicts_json(rows, references), "verdicts.json")
    return messages


def _check_launch(study: Study, trials: int | None, workers: int) -> int:
    """The launch's trial count; --trials and --workers checked against the study."""
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1 (got {workers})")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials: must be >= 1 (got {trials})")
    target = trials or study.trials
    if study.spec.sampler.type == "grid" and target > study.grid_size:
        raise ConfigError(f"--trials: {target} exceeds the grid size {study.grid_size} of "
                          f"{study.path} (a grid runs each configuration once)")
    return target


def _reap(study_obj, context: WorkerContext) -> list[str]:
    """Re-queue trials of dead workers (their runs KILLED), then KILLED orphaned MLflow runs."""
    lock = StudyLock(context.storage, study_obj.study_name)
    try:
        with lock, interrupts(False):  # a reap is never cut between a FAIL and its re-queue
            messages = reap_trials(study_obj, _run_killer(context, study_obj.study_name))
            states = {trial.number: (trial.state.name, trial.user_attrs.get("fairl_killed"))
                      for trial in study_obj.get_trials(deepcopy=False)}
            return messages + reap_runs(context.tracking_uri, context.experiment, states)
    finally:
        lock.close()


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

def make_sampler(study: Study, offset: int):
    """The configured sampler; tpe/random seeds move with `offset` so a resumed run differs."""
    sampler = study.spec.sampler
    if sampler.type == "grid":
        space = {name: param.choices for name, param in study.space.items()}
        return optuna.samplers.GridSampler(space, seed=sampler.seed)
    if sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=sampler.seed + offset)
    return optuna.samplers.TPESampler(seed=sampler.seed + offset)


def work(context: WorkerContext, on_trial=None) -> Tally:
    """Run trials until the study reaches its count; `on_trial(tally)` after each."""
    study_def = load_study(context.path, context.raw)
    storage = open_storage(context.storage)
    existing = optuna.load_study(study_name=study_def.name, storage=storage)
    offset = len(existing.get_trials(deepcopy=False)) + 1000 * context.worker_index
    rounds = study_def.spec.fit.get("rounds", FitConfig().rounds)  # Hyperband's max resource
    study = optuna.load_study(
        study_name=study_def.name, storage=storage, sampler=make_sampler(study_def, offset),
        pruner=make_pruner(study_def.spec.pruner, rounds * len(study_def.spec.seeds)))
    lock = StudyLock(context.storage, study_def.name)
    on_killed = _run_killer(context, study_def.name)
    parent = os.getppid()
    # Everything imported so far (torch, mlflow, sqlalchemy: ~0.5 M objects) leaves the
    # collector's view; full collections otherwise stall MLflow's many small ORM objects.
    gc.freeze()
    try:
        with numpy_blas_single_threaded():  # fairl.devices: why
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
                            objective, trial, study_def, context, lock), n_trials=1, catch=(Exception,))
                    except StoreFault as fault:
                        raise fault.error from None
                if on_trial is not None:
                    on_trial(tally(study.get_trials(deepcopy=False)))
    finally:
        lock.close()
    return tally(study.get_trials(deepcopy=False))


def _stop_on_disk_error(function, *args):
    """function(*args), a disk error (full, read-only) raised as StoreFault: the launch stops
    and the trial, left RUNNING, is re-queued by the next reap instead of counted as failed."""
    try:
        return function(*args)
    except OSError as error:
        if error.errno in DISK_ERRNOS:
            raise StoreFault(error) from error
        raise


def objective(trial, study: Study, context: WorkerContext, lock: StudyLock):
    """One trial: resolve, fit every seed, log one MLflow run; returns the mean objective(s)."""
    # Recorded before the lock is released: a RUNNING trial without it has a dead worker.
    trial.set_user_attr("worker", worker_identity())
    lock.release()
    spec, uri = study.spec, context.tracking_uri
    run_id = config = None
    try:
        # The trial's own code, from its first step: a stop signal (Ctrl-C, SIGTERM) raises
        # here, and the except clause below re-queues the trial, its run (if made) KILLED.
        # Outside it (reap, count, Optuna's ask and tell) the signal waits: fairl.process.
        with interrupts(True):
            tags = {"kind": "trial", "study": study.name, "ablation": spec.ablation,
                    "trial_number": str(trial.number), "optuna_trial_id": str(trial._trial_id),
                    "optuna_study": study.name, "optuna_storage": redact(context.storage),
                    "worker": worker_identity(), "seed": ",".join(map(str, spec.seeds)),
                    "world": spec.world["name"], "torch_threads": str(_torch_threads()),
                    **context.env_tags, **spec.tags}
            values = suggest(trial, study.space)
            run_id = runs.start_run(uri, context.experiment,
                                    trial_run_name(values, trial.number), tags,
                                    parent_run_id=context.launch_run)
            trial.set_user_attr("mlflow_run_id", run_id)
            config = resolve(spec, values)
            trial.set_user_attr("config_id", config.config_id)
            metrics, curves, artifacts, world, results = evaluate(
                config, spec.top_failures, spec.curve_points, _monitor(trial, study, config))
            values = [_objective_value(metrics, metric, spec.world["name"])
                      for metric in spec.metrics]
            bad = [m for m, v in zip(spec.metrics, values) if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"objective metric(s) {bad} are not finite: {values}")
            log_trial(uri, run_id, config, metrics, curves, artifacts,
                      {"dataset_hash": world.dataset_hash},
                      reward=(results, best_seed(metrics, config.seeds, spec), world),
                      experiment=context.experiment)
            runs.log_world_inputs(uri, run_id, spec.world["name"], world.dataset_hash,
                                  world_splits(world), spec.world)
            runs.end_run(uri, run_id, runs.FINISHED)
    except Pruned as pruned:
        _prune_run(uri, run_id, config, pruned)
        raise
    except Exception as error:
        if raised_by_a_stop(error):  # a library's cleanup failed on the stop: still the stop
            _interrupted(trial, uri, run_id)
            raise KeyboardInterrupt from error
        if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
            # A full or read-only disk is not the configuration's fault: stop the launch with
            # the trial left RUNNING; the next reap (at the end of this launch) re-queues it.
            raise StoreFault(error) from error
        _fail_trial(trial, study.name, uri, run_id, config, error)
        raise
    except BaseException:  # Ctrl-C / SIGTERM: not the configuration's fault, run it again
        _interrupted(trial, uri, run_id)
        raise
    return values[0] if len(values) == 1 else values


def raised_by_a_stop(error: BaseException) -> bool:
    """Was `error` raised while a KeyboardInterrupt (Ctrl-C, SIGTERM) was being handled?"""
    todo, seen = [error], set()
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        todo += [error.__cause__, error.__context__]
    return False


def _interrupted(trial, uri: str, run_id: str | None) -> None:
    """A trial stopped by Ctrl-C or SIGTERM: re-queued by the next reap, its run KILLED."""
    trial.set_user_attr("fairl_interrupted", True)
    if run_id is not None:
        runs.kill_run(uri, run_id, "interrupted (Ctrl-C or SIGTERM); re-queued")


def _torch_threads() -> int:
    """torch's intra-op threads in this process: a trial's numbers depend on it (MKL's
    matrix-vector products round differently with another count, and FA-IRL's sampled
    failure sets carry a last-bit difference into a different trajectory), so the run says."""
    import torch  # what the fits load anyway

    return torch.get_num_threads()


def _monitor(trial, study: Study, config: TrialConfig) -> TrialMonitor | None:
    """The trial's pruning monitor (None without a pruner)."""
    spec = study.spec
    if spec.pruner.type == "none":
        return None
    world = load_world(config.world.name, config.world.options)  # memoised: evaluate's world
    metric = spec.metrics[0]
    pairs = world.validation if metric.startswith("val_") else world.test
    if pairs is None:
        _objective_value({}, metric, spec.world["name"])  # the missing-split ConfigError
    return TrialMonitor(trial, metric, spec.pruner.every, config.fit.rounds, len(config.seeds),
                        pairs)


def _prune_run(uri: str, run_id: str, config: TrialConfig, pruned: Pruned) -> None:
    """A pruned trial's run: its config and the last value it reported, FINISHED, tagged."""
    _log_config(uri, run_id, config, metrics={f"pruned_{pruned.metric}": pruned.value},
                tags={"pruned_at_round": str(pruned.step)})
    runs.end_run(uri, run_id, runs.FINISHED)


def trial_run_name(values: dict[str, Any], number: int, width: int = 60) -> str:
    """`fa_irl · max_margin · lam0=10 #12`: what the trial searched, then its number."""
    parts = []
    for name, value in values.items():
        short = name.rsplit(".", 1)[-1]
        if isinstance(value, str) or short == "variant":  # a choice's name says itself
            parts.append(str(value))
        else:
            parts.append(f"{short}={value:.3g}" if isinstance(value, float) else f"{short}={value}")
    label = " · ".join(parts) or "base"
    if len(label) > width:
        label = label[:width - 1] + "…"
    return f"{label} #{number}"


def world_splits(world) -> dict[str, int]:
    """MLflow dataset contexts of a world's splits -> pair counts."""
    splits = {"train": len(world.train), "test": len(world.test)}
    if world.validation is not None:
        splits["validation"] = len(world.validation)
    return splits


def _objective_value(metrics: dict[str, float], metric: str, world: str) -> float:
    """The trial's mean of an objective metric; a val_* metric needs a validation split."""
    if metric not in metrics:
        raise ConfigError(f"objective {metric}: world {world!r} has no validation split (set "
                          "world.options.validation_split) or no r* (STARC)")
    return metrics[metric]


def evaluate(config: TrialConfig, top_failures: int = 20, curve_points: int | None = None,
             monitor: TrialMonitor | None = None):
    """Fit the configuration on every seed: (metrics, curves, artifacts, world, results).

    `monitor`: the trial's pruning (it may raise optuna.TrialPruned between rounds)."""
    world = load_world(config.world.name, config.world.options)
    per_seed: dict[int, dict[str, float]] = {}
    histories, failures, results = {}, {}, {}
    for seed in config.seeds:
        start = time.perf_counter()
        outcome = run_experiment(config.world, config.for_seed(seed), world,
                                 config.data_resample, monitor)
        per_seed[seed] = {**{f"train_{k}": v for k, v in outcome.train_metrics.items()},
                          **{f"val_{k}": v for k, v in (outcome.val_metrics or {}).items()},
                          **{f"test_{k}": v for k, v in outcome.test_metrics.items()},
                          "fit_seconds": time.perf_counter() - start}
        if monitor is not None:
            monitor.finish_seed(per_seed[seed][f"{monitor.split}_{monitor.name}"])
        histories[seed] = outcome.result.history
        results[seed] = outcome.result
        train = outcome.train
        margins = outcome.result.reward(train.h_T) - outcome.result.reward(train.h_NT)
        failures[seed] = runs.top_failures(train, outcome.result.failure_counts,
                                           np.asarray(margins), top_failures)
    metrics = {}
    for key in per_seed[config.seeds[0]]:
        values = [per_seed[seed][key] for seed in config.seeds]
        metrics[key] = statistics.fmean(values)
        if len(values) > 1 and key != "fit_seconds":
            metrics[f"{key}_std"] = statistics.stdev(values)
        for seed in config.seeds:
            metrics[f"seed_{seed}/{key}"] = per_seed[seed][key]
    curves = runs.mean_curves(list(histories.values()), curve_points)
    artifacts = {"history.csv": runs.history_csv(histories),
                 "failures.csv": runs.failures_csv(failures),
                 "rewards.npz": runs.rewards_npz(results, world.test)}
    return metrics, curves, artifacts, world, results


def best_seed(metrics: dict[str, float], seeds: list[int], spec) -> int:
    """The seed whose first objective metric is best (the one a reward model scores with)."""
    key, sign = spec.metrics[0], 1 if spec.directions[0] == "maximize" else -1
    scored = [(sign * metrics.get(f"seed_{seed}/{key}", -math.inf * sign), -i, seed)
              for i, seed in enumerate(seeds)]
    return max(scored)[2] if len(seeds) > 1 else seeds[0]


def _config_tags(config: TrialConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(params, tags) of a trial's configuration, as its MLflow run shows them."""
    params = runs.flatten({"variant": config.variant, "seeds": config.seeds,
                           "world": config.world_values, "fit": config.fit_values})
    return params, {"config_id": config.config_id, "method": config.fit.method,
                    "variant": str(config.variant)}


def log_trial(uri: str, run_id: str, config: TrialConfig, metrics, curves, artifacts,
              extra_tags: dict[str, str], reward=None, experiment: str | None = None) -> None:
    """Params, final metrics, curves and tags in one batch, the artifacts, the reward model.

    `reward`: (seed -> FitResult, best seed, world), logged as pyfunc model `reward` (in
    `experiment`, the run's; read from the run when None).
    """
    params, tags = _config_tags(config)
    if reward is not None:
        from fairl.models import log_reward_model  # heavy: mlflow.pyfunc

        results, seed, world = reward
        texts = world.train.text_T is not None
        encoder = world.info.get("encoder", "minilm") if texts else None
        example = world.train.text_T[:2] if texts else world.train.h_T[:2]
        model_uri = log_reward_model(uri, run_id, results, seed, encoder, example,
                                     experiment_id=experiment, params=params)
        extra_tags = {**extra_tags, "reward_best_seed": str(seed), "reward_model_uri": model_uri}
    runs.log_run(uri, run_id, params=params, metrics=metrics, curves=curves,
                 tags={**tags, **extra_tags})
    artifacts = {**artifacts, "config.yaml": yaml.safe_dump(config.as_dict(), sort_keys=False)}
    for name, text in artifacts.items():
        runs.log_text(uri, run_id, text, name)


def _log_config(uri: str, run_id: str, config: TrialConfig, metrics=None, tags=None) -> None:
    """The params, tags and config.yaml of a run that ends without a full trial's logging."""
    params, config_tags = _config_tags(config)
    runs.log_run(uri, run_id, params=params, metrics=metrics, tags={**config_tags, **(tags or {})})
    runs.log_text(uri, run_id, yaml.safe_dump(config.as_dict(), sort_keys=False), "config.yaml")


def _fail_trial(trial, study: str, uri: str, run_id: str | None, config: TrialConfig | None,
                error: Exception) -> None:
    """A failed trial: one line on stderr, the reason on the trial, the run FAILED."""
    reason = runs.error_line(error)
    print(f"{study}: trial {trial.number} failed: {reason}", file=sys.stderr)
    trial.set_user_attr("fail_reason", reason[:2000])
    if run_id is None:  # the error came before its run was made (MLflow's start_run itself)
        return
    try:
        if config is not None:
            _log_config(uri, run_id, config)
        runs.fail_run(uri, run_id, error)
    except Exception as logging_error:  # noqa: BLE001 (keep the trial's own error)
        print(f"  (could not mark MLflow run {run_id} FAILED: {logging_error})", file=sys.stderr)
