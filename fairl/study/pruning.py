"""Pruning a trial early: Optuna's pruners over the objective reported every k rounds.

A trial fits its seeds one after another; `TrialMonitor` is the fit's monitor
(fairl.irl.fit.Monitor): every `pruner.every` rounds it scores the heads so far on the
objective's split and reports, at global round k = i * rounds + t + 1 of seed i, the mean of
the finished seeds' final values and the current seed's value (the trial's running
estimate). When Optuna's pruner says so, it raises optuna.TrialPruned with that round; the
runner tags the trial's MLflow run `pruned_at_round` and Optuna marks the trial PRUNED.
"""

from __future__ import annotations

import statistics

import optuna

from fairl.metrics import evaluate_reward
from fairl.study.spec import PrunerSpec


def make_pruner(spec: PrunerSpec, total_rounds: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner of a study file's `pruner:` (NopPruner for none)."""
    min_resource = spec.min_resource or spec.every
    if spec.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials,
                                           n_warmup_steps=spec.warmup_rounds,
                                           interval_steps=1)
    if spec.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource,
                                                      reduction_factor=spec.reduction_factor)
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource,
                                              max_resource=total_rounds,
                                              reduction_factor=spec.reduction_factor)
    return optuna.pruners.NopPruner()


class TrialMonitor:
    """fit()'s monitor for one trial: report the objective, raise TrialPruned when told.

    `pairs`: the split the objective is measured on (validation for val_*, test for test_*).
    """

    def __init__(self, trial, metric: str, every: int, rounds: int, seeds: int, pairs):
        self.trial, self.every, self.rounds, self.seeds = trial, every, rounds, seeds
        self.split, _, self.name = metric.partition("_")  # val_f1 -> (val, f1)
        self.pairs = pairs
        self.finals: list[float] = []  # the objective of each finished seed

    def finish_seed(self, value: float) -> None:
        """A seed's final objective; reported (and maybe pruned) unless it was the last."""
        self.finals.append(value)
        if len(self.finals) < self.seeds:
            self.report(len(self.finals) * self.rounds, statistics.fmean(self.finals))

    def __call__(self, t: int, result) -> None:
        current = evaluate_reward(result.reward, self.pairs)[self.name]
        self.report(len(self.finals) * self.rounds + t + 1,
                    statistics.fmean([*self.finals, current]))

    def report(self, step: int, value: float) -> None:
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise Pruned(step, f"{self.split}_{self.name}", value)


class SideBySideMonitor(TrialMonitor):
    """The monitor of a trial whose seeds fit side by side (a batched study: fairl.study.batch),
    shared by its seeds' heads: every `every` rounds the mean objective of its seeds at global
    round t + 1; fit_many ends every head of the trial when it raises."""

    def __init__(self, trial, metric: str, every: int, rounds: int, seeds: int, pairs):
        super().__init__(trial, metric, every, rounds, seeds, pairs)
        self.values: dict[int, list[float]] = {}  # round -> the seeds' values so far

    def __call__(self, t: int, result) -> None:
        values = self.values.setdefault(t, [])
        values.append(evaluate_reward(result.reward, self.pairs)[self.name])
        if len(values) == self.seeds:
            del self.values[t]
            self.report(t + 1, statistics.fmean(values))


class Pruned(optuna.TrialPruned):
    """optuna.TrialPruned with the global round and the last value it reported."""

    def __init__(self, step: int, metric: str, value: float):
        super().__init__(f"pruned at round {step} ({metric} {value:.4g})")
        self.step, self.metric, self.value = step, metric, value
