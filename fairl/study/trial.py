"""One trial, from its sampled values to a FINISHED (or FAILED, KILLED, pruned) MLflow run.

`objective` (the trial: its config from the sampler, `evaluate`, one MLflow run) →
`evaluate` (every seed: `fairl.experiment.run_experiment` = compose + `fairl.irl.fit` +
metrics) → `log_trial` (params, metrics, curves, artifacts in one batch, via `fairl.runs`).
A stop signal raises only inside the trial's own code (fairl.process.interrupts): the trial
is re-queued and its run KILLED; a disk error or a store that stayed unreachable
(fairl.outage) stops the launch (StoreFault); any other error fails the trial, its run
FAILED with the traceback (an error a store raised is marked `fail_store`: not the
configuration's). fairl.study.runner drives the trials.
"""


import dataclasses
import errno
import math
import statistics
import sys
import time
from typing import Any

import numpy as np
import yaml

from fairl import outage
from fairl.config import ConfigError
from fairl.experiment import run_experiment
from fairl.paths import redact
from fairl.process import interrupts
from fairl.runs import write as runs
from fairl.runs.provenance import worker_identity
from fairl.study.pruning import Pruned, TrialMonitor
from fairl.study.spec import Study, TrialConfig, resolve, suggest
from fairl.study.storage import (
    StudyLock,
)
from fairl.worlds import load_world

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


class StoreFault(BaseException):
    """A disk error or an unreachable store inside a trial: not an Exception, so Optuna
    neither catches it nor fails the trial (work() raises the error itself again)."""

    def __init__(self, error: Exception):
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
    batch: int = 1  # trials fitted in one pass (fairl.study.batch); 1: one trial at a time
    env_tags: dict[str, str] = dataclasses.field(default_factory=dict)



def objective(trial, study: Study, context: WorkerContext, lock: StudyLock):
    """One trial: resolve, fit every seed, log one MLflow run; returns the mean objective(s)."""
    outage.set_task(f"trial {trial.number} of {study.name}")  # what a store outage holds up
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
            run_id, config = start_trial(trial, study, context)
            values = finish_trial(study, context, run_id, config, *evaluate(
                config, spec.top_failures, spec.curve_points, _monitor(trial, study, config)))
    except Pruned as pruned:
        _prune_run(uri, run_id, config, pruned)
        raise
    except Exception as error:
        if raised_by_a_stop(error):  # a library's cleanup failed on the stop: still the stop
            _interrupted(trial, uri, run_id)
            raise KeyboardInterrupt from error
        if (fault := store_fault(error)) is not None:
            raise fault from error
        _fail_trial(trial, study.name, uri, run_id, config, error)
        raise
    except BaseException:  # Ctrl-C / SIGTERM: not the configuration's fault, run it again
        _interrupted(trial, uri, run_id)
        raise
    return values[0] if len(values) == 1 else values


def start_trial(trial, study: Study, context: WorkerContext, fit_batch: int = 1
                ) -> tuple[str, TrialConfig]:
    """A trial's values from the sampler, its config, and its MLflow run: (run id, config).

    `fit_batch`: trials fitted in one pass with this one (tag `fit_batch`, with
    `torch_threads`: a trial's numbers depend on both, to float rounding)."""
    spec = study.spec
    tags = {"kind": "trial", "study": study.name, "ablation": spec.ablation,
            "trial_number": str(trial.number), "optuna_trial_id": str(trial._trial_id),
            "optuna_study": study.name, "optuna_storage": redact(context.storage),
            "worker": worker_identity(), "seed": ",".join(map(str, spec.seeds)),
            "world": spec.world["name"], "torch_threads": str(_torch_threads()),
            **({"fit_batch": str(fit_batch)} if fit_batch > 1 else {}),
            **context.env_tags, **spec.tags}
    values = suggest(trial, study.space)
    run_id = runs.start_run(context.tracking_uri, context.experiment,
                            trial_run_name(values, trial.number), tags,
                            parent_run_id=context.launch_run)
    trial.set_user_attr("mlflow_run_id", run_id)
    config = resolve(spec, values)
    trial.set_user_attr("config_id", config.config_id)
    return run_id, config


def finish_trial(study: Study, context: WorkerContext, run_id: str, config: TrialConfig,
                 metrics, curves, artifacts, world, results) -> list[float]:
    """The objective values (checked finite), the whole run logged and FINISHED."""
    spec, uri = study.spec, context.tracking_uri
    values = [_objective_value(metrics, metric, spec.world["name"]) for metric in spec.metrics]
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
    return values


def store_fault(error: BaseException) -> StoreFault | None:
    """A full or read-only disk, or a store away past FAIRL_STORE_TIMEOUT, is not the
    configuration's fault: StoreFault stops the launch with the trial left RUNNING, and the
    next reap (at the end of this launch) re-queues it; None for any other error."""
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        return StoreFault(error)
    if (unreachable := outage.given_up(error)) is not None:
        return StoreFault(unreachable)
    return None


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
    try:
        trial.set_user_attr("fairl_interrupted", True)
        if run_id is not None:
            runs.kill_run(uri, run_id, "interrupted (Ctrl-C or SIGTERM); re-queued")
    except outage.StoreUnreachable:  # a store away: the next launch's reap does both
        pass


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
    outcomes, per_seed = {}, {}
    for seed in config.seeds:
        start = time.perf_counter()
        outcomes[seed] = run_experiment(config.world, config.for_seed(seed), world,
                                        config.data_resample, monitor)
        per_seed[seed] = seed_metrics(outcomes[seed], time.perf_counter() - start)
        if monitor is not None:
            monitor.finish_seed(per_seed[seed][f"{monitor.split}_{monitor.name}"])
    return summarise(config, world, outcomes, per_seed, top_failures, curve_points)


def seed_metrics(outcome, seconds: float) -> dict[str, float]:
    """One seed's train_, val_ and test_ metrics and its fit_seconds."""
    return {**{f"train_{k}": v for k, v in outcome.train_metrics.items()},
            **{f"val_{k}": v for k, v in (outcome.val_metrics or {}).items()},
            **{f"test_{k}": v for k, v in outcome.test_metrics.items()},
            "fit_seconds": seconds}


def summarise(config: TrialConfig, world, outcomes: dict, per_seed: dict[int, dict[str, float]],
              top_failures: int = 20, curve_points: int | None = None):
    """The trial's (metrics, curves, artifacts, world, results) from its seeds' outcomes."""
    histories, failures, results = {}, {}, {}
    for seed, outcome in outcomes.items():
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
    """A failed trial: one line on stderr, the reason on the trial, the run FAILED; an error
    a store raised is marked (user attr fail_store): it is not the configuration's."""
    reason, store = runs.error_line(error), outage.refused_by(error)
    print(f"{study}: trial {trial.number} failed: {reason}"
          + (f" (raised by {store}, not the configuration)" if store else ""), file=sys.stderr)
    trial.set_user_attr("fail_reason", reason[:2000])
    if store:
        trial.set_user_attr("fail_store", store)
    if run_id is None:  # the error came before its run was made (MLflow's start_run itself)
        return
    try:
        if config is not None:
            _log_config(uri, run_id, config)
        runs.fail_run(uri, run_id, error)
    except Exception as logging_error:  # noqa: BLE001 (keep the trial's own error)
        print(f"  (could not mark MLflow run {run_id} FAILED: {logging_error})", file=sys.stderr)
