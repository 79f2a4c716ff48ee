"""Batched trials (`batch: K`): K trials asked at once, all their seeds fitted in one pass.

fairl.study.runner.work hands a study with batch K > 1 to `work_batched`: under the study
lock it reaps, counts and asks Optuna for up to K trials (TPE with constant_liar, so the K
differ; near the end its share of the trials left, `batch_size`), each with its worker
recorded before the lock is released; outside it, it starts their MLflow runs and fits
every seed of every trial with fairl.irl.fit_many (heads on the same training pairs share one
pass). A logging thread then writes each trial's run whole
(fairl.study.trial.finish_trial) and only then tells Optuna, while the main thread fits the
next batch. Pruning acts per trial: its seeds' heads share a SideBySideMonitor (reported at
round t + 1) and end together; the other heads go on. Nothing is lost: a killed worker's
untold trials are RUNNING with a dead worker (the next reap re-queues them, runs KILLED); a
stop signal marks every untold trial interrupted (re-queued, run KILLED) once the logging
thread has finished the trial it is on. A failed trial is FAILED with its run, as unbatched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time

import optuna

from fairl import outage
from fairl.experiment import score, training_pairs
from fairl.irl.fit import fit_many
from fairl.process import interrupts, stop_pending
from fairl.runs.provenance import worker_identity
from fairl.study.pruning import Pruned, SideBySideMonitor
from fairl.study.spec import Study
from fairl.study.storage import Tally, reap_trials, start_heartbeat, tally
from fairl.study.trial import (
    StoreFault,
    WorkerContext,
    _fail_trial,
    _interrupted,
    _prune_run,
    finish_trial,
    seed_metrics,
    start_trial,
    store_fault,
    summarise,
)
from fairl.worlds import load_world


@dataclasses.dataclass
class _Trial:
    """One trial of a batch: Optuna's trial, its heartbeat, run and config, how it ended."""

    trial: optuna.Trial
    heartbeat: object
    run_id: str | None = None
    config: object = None
    outcome: object = None  # (metrics, curves, artifacts, world, results), or the error
    told: bool = False


def work_batched(context: WorkerContext, study_def: Study, study, lock, on_killed,
                 on_trial=None) -> Tally:
    """Run batches of `context.batch` trials until the study reaches its count."""
    logger = _Logger(study, study_def, context, lock, on_trial)
    try:
        while True:
            # The logger's guard first, then the study lock (one per process), as it does.
            with logger.guard, lock, interrupts(False):
                reap_trials(study, on_killed, busy=logger.busy())
                counts = tally(study.get_trials(deepcopy=False))
                size = batch_size(context.batch, context.target - counts.done - counts.running,
                                  counts.waiting, context.workers)
                if stop_pending() or size <= 0:
                    break
                batch = []
                for _ in range(size):
                    trial = study.ask()
                    trial.set_user_attr("worker", worker_identity())  # before the release
                    batch.append(_Trial(trial, start_heartbeat(study, trial)))
            logger.check()
            _run_batch(batch, study_def, context, logger)
    finally:
        logger.close()
    return tally(study.get_trials(deepcopy=False))


def batch_size(batch: int, left: int, waiting: int, workers: int) -> int:
    """How many trials a worker asks for: up to `batch`, the re-queued (`waiting`) ones at
    least; near the end its share of the `left` ones, ceil(left / workers), so the last trials
    are shared out and one worker does not fit a whole batch while the others have nothing
    left to ask for."""
    share = -(-left // max(1, workers)) if left > 0 else left
    return min(batch, max(share, waiting))


def _run_batch(batch: list[_Trial], study: Study, context: WorkerContext, logger) -> None:
    """Start, fit and hand to the logger every trial of `batch`; a stop re-queues the untold."""
    try:
        with interrupts(True):
            outage.set_task(f"trials {', '.join(str(item.trial.number) for item in batch)} "
                            f"of {study.name}")  # what a store outage holds up
            for item in batch:
                try:
                    item.run_id, item.config = start_trial(item.trial, study, context,
                                                           fit_batch=len(batch))
                except Exception as error:
                    if (fault := store_fault(error)) is not None:
                        raise fault from error  # untold trials re-queued (below), not failed
                    item.outcome = error
            _fit(batch, study)
        for item in batch:
            logger.put(item)
    except StoreFault:  # the launch stops; the untold trials stay RUNNING for its last reap
        with contextlib.suppress(StoreFault):  # the logger meets the same fault: raise one
            logger.close()
        raise
    except BaseException:
        untold = {id(item): item for item in batch + logger.drain() if not item.told}
        logger.close()  # the trial being logged ends whole
        with logger.guard, logger.lock, interrupts(False):
            for item in untold.values():
                if item.told:
                    continue
                _interrupted(item.trial, context.tracking_uri, item.run_id)
                _tell(logger.study, item.trial, None, optuna.trial.TrialState.FAIL)
                item.heartbeat.join()
        raise


def _fit(batch: list[_Trial], study: Study) -> None:
    """Every seed of every started trial, heads on the same training pairs in one pass."""
    spec, groups = study.spec, {}
    for item in batch:
        if item.outcome is not None:
            continue
        config = item.config
        world = load_world(config.world.name, config.world.options)  # memoised
        monitor = None
        if spec.pruner.type != "none":
            metric = spec.metrics[0]
            pairs = world.validation if metric.startswith("val_") else world.test
            monitor = SideBySideMonitor(item.trial, metric, spec.pruner.every,
                                        config.fit.rounds, len(config.seeds), pairs)
        for seed in config.seeds:
            train = training_pairs(world, config.world.compose, seed, config.data_resample)
            groups.setdefault(id(train), (train, world, []))[2].append((item, seed, monitor))
    start, outcomes = time.perf_counter(), {}
    for train, world, heads in groups.values():
        results = fit_many(train.h_T, train.h_NT, [item.config.for_seed(seed)
                                                   for item, seed, _ in heads],
                           train.gt_T, train.gt_NT, [monitor for _, _, monitor in heads])
        for (item, seed, _), result in zip(heads, results):
            outcomes.setdefault(id(item), {})[seed] = (world, train, result)
    seconds = (time.perf_counter() - start) / max(1, sum(len(h) for _, _, h in groups.values()))
    for item in batch:
        if item.outcome is not None:
            continue
        seeds = outcomes[id(item)]
        error = next((r for _, _, r in seeds.values() if isinstance(r, Exception)), None)
        if error is not None:  # a pruned head, or one that diverged: the trial's end
            item.outcome = error
            continue
        try:
            scored = {seed: score(world, train, result)
                      for seed, (world, train, result) in sorted(seeds.items())}
            per_seed = {seed: seed_metrics(outcome, seconds) for seed, outcome in scored.items()}
            item.outcome = summarise(item.config, scored[item.config.seeds[0]].world, scored,
                                     per_seed, spec.top_failures, spec.curve_points)
        except Exception as error:  # noqa: BLE001
            item.outcome = error


class _Logger:
    """One thread that logs each trial's run whole, then tells Optuna (under the lock)."""

    def __init__(self, study, study_def: Study, context: WorkerContext, lock, on_trial):
        self.study, self.study_def, self.context = study, study_def, context
        self.lock, self.on_trial = lock, on_trial
        self.queue: queue.Queue = queue.Queue()
        self.untold: set[int] = set()  # trial numbers handed over and not yet told
        self.error: BaseException | None = None
        self.guard = threading.Lock()  # the study lock is one per process: threads take this
        self.thread = threading.Thread(target=self._loop, name="fairl-trial-logger", daemon=True)
        self.thread.start()

    def put(self, item: _Trial) -> None:
        self.untold.add(item.trial.number)
        self.queue.put(item)

    def busy(self) -> frozenset[int]:
        """Trial numbers handed over and not yet told: the reap leaves them alone."""
        return frozenset(self.untold)

    def check(self) -> None:
        """Raise what stopped the thread (a store fault), in the main thread."""
        if self.error is not None:
            raise self.error

    def drain(self) -> list[_Trial]:
        """The trials still queued (not begun), taken off the queue."""
        items = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return items
            if item is not None:
                items.append(item)

    def close(self) -> None:
        """Log what is queued, then stop the thread; raise what stopped it."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        self.check()

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                self._finish(item)
            except BaseException as error:  # noqa: BLE001 (the main thread raises it)
                self.error = error
                return

    def _finish(self, item: _Trial) -> None:
        """Log the trial's run whole (or FAILED, or pruned), then tell Optuna."""
        study, context, uri = self.study_def, self.context, self.context.tracking_uri
        outcome, state, values = item.outcome, optuna.trial.TrialState.COMPLETE, None
        if isinstance(outcome, Pruned):
            _prune_run(uri, item.run_id, item.config, outcome)
            state = optuna.trial.TrialState.PRUNED
        elif isinstance(outcome, BaseException):
            state = optuna.trial.TrialState.FAIL
            _fail_trial(item.trial, study.name, uri, item.run_id, item.config, outcome)
        else:
            try:
                values = finish_trial(study, context, item.run_id, item.config, *outcome)
            except Exception as error:
                if (fault := store_fault(error)) is not None:
                    # A disk or store fault stops the launch (the main thread raises it); the
                    # trial stays RUNNING and untold, and the launch's last reap re-queues it.
                    raise fault from error
                state = optuna.trial.TrialState.FAIL
                _fail_trial(item.trial, study.name, uri, item.run_id, item.config, error)
        with self.guard, self.lock:  # its run is whole (FINISHED) before Optuna hears of it
            _tell(self.study, item.trial, values, state)
            item.told = True
            self.untold.discard(item.trial.number)
        item.heartbeat.join()
        if self.on_trial is not None:
            self.on_trial(tally(self.study.get_trials(deepcopy=False)))


def _tell(study, trial, values, state) -> None:
    """study.tell outside study.optimize: a grid sampler's last tell calls study.stop(), which
    raises there after the state is stored (Optuna's _tell: stored in a finally); the worker
    loop stops by the count anyway."""
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise
