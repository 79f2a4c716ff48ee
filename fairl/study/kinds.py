"""The two kinds of study, as the runner runs them: a search over FitConfig, a re-RLHF grid.

fairl.study.runner runs both with one loop and asks the study for what differs between them:
its `sampler(offset, batched)` and `pruner(batched)`, its `objective(trial, context, lock)`
(one trial), its `conclude(uri, launch_run)` (the launch run's verdicts), and `is_grid`,
`sampler_name`, `default_batch`, `max_batch`, `launch_tags`. Both also have what the runner
and fairl.study.storage read of either spec class: name, path, raw, trials, grid_size,
fingerprint(), spec.description / tags / world / metrics / directions.

* `IRLStudy` (fairl.study.spec): Optuna's configured sampler and pruner; a trial fits one
  configuration on every seed (fairl.study.trial, or fairl.study.batch with `batch` > 1); the
  launch's verdicts compare every configuration with standard IRL (fairl.study.verdicts).
* `RerlhfStudy` (fairl.study.rerlhf_spec): a grid over (source, seed); a trial is one cell,
  trained and evaluated (fairl.study.rerlhf); the launch's verdicts compare FA-IRL's policy
  with standard IRL's and r*'s (fairl.study.rerlhf_verdicts).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna

from fairl.irl.config import FitConfig
from fairl.runs import write as runs
from fairl.runs.read import MissingStudy, load_study_runs
from fairl.study import rerlhf, rerlhf_spec, rerlhf_verdicts, spec, trial
from fairl.study.files import load_study_file
from fairl.study.pruning import make_pruner
from fairl.study.references import reference_metrics
from fairl.study.verdicts import row_metrics, study_rows, verdicts_json


class IRLStudy(spec.Study):
    """An IRL study file: Optuna searches FitConfig, a trial fits one configuration per seed."""

    max_batch = 1024

    @property
    def is_grid(self) -> bool:
        return self.spec.sampler.type == "grid"

    @property
    def sampler_name(self) -> str:
        return self.spec.sampler.type

    @property
    def default_batch(self) -> int:
        return self.spec.batch

    @property
    def launch_tags(self) -> dict[str, str]:
        return {"ablation": self.spec.ablation}

    def sampler(self, offset: int, batched: bool = False):
        """The configured sampler; tpe/random seeds move with `offset` so a resumed run differs;
        `batched`: TPE's constant liar, so the trials of one batch differ."""
        sampler = self.spec.sampler
        if sampler.type == "grid":
            space = {name: param.choices for name, param in self.space.items()}
            return optuna.samplers.GridSampler(space, seed=sampler.seed)
        if sampler.type == "random":
            return optuna.samplers.RandomSampler(seed=sampler.seed + offset)
        return optuna.samplers.TPESampler(seed=sampler.seed + offset, constant_liar=batched)

    def pruner(self, batched: bool = False):
        """The configured pruner; Hyperband's max resource is the trial's rounds (batched: the
        seeds side by side report rounds, not seed-rounds)."""
        rounds = self.spec.fit.get("rounds", FitConfig().rounds)
        return make_pruner(self.spec.pruner, rounds * (1 if batched else len(self.spec.seeds)))

    def objective(self, optuna_trial, context, lock):
        return trial.objective(optuna_trial, self, context, lock)

    def conclude(self, uri: str, launch_run: str) -> list[str]:
        """The launch run's verdicts (fairl.study.verdicts) and references; problems as messages."""
        messages, references, rows = [], {}, []
        try:
            references = reference_metrics(self.spec)
        except Exception as error:  # noqa: BLE001 (the trials are logged; report, do not fail)
            messages.append(f"reference metrics not computed: {runs.error_line(error)}")
        try:
            source = load_study_runs.__wrapped__(uri, self.name, self.path)  # not the cache
            rows = study_rows(source)
        except MissingStudy:
            pass  # no finished trial: nothing to compare
        except Exception as error:  # noqa: BLE001
            messages.append(f"verdicts not computed: {runs.error_line(error)}")
        runs.log_run(uri, launch_run, metrics={**references, **row_metrics(rows)})
        runs.log_text(uri, launch_run, verdicts_json(rows, references), "verdicts.json")
        return messages


class RerlhfStudy(rerlhf_spec.Study):
    """A re-RLHF study file: a grid over (reward source, seed), one trial per cell."""

    is_grid = True
    sampler_name = "grid"
    default_batch = max_batch = 1  # a cell is hours of RLHF: nothing to batch

    @property
    def launch_tags(self) -> dict[str, str]:
        return {}

    def sampler(self, offset: int = 0, batched: bool = False):
        """Every cell once, in the grid sampler's seeded order (the same on every worker)."""
        return optuna.samplers.GridSampler({"source": self.source_names,
                                            "seed": list(self.spec.seeds)}, seed=0)

    def pruner(self, batched: bool = False):
        return optuna.pruners.NopPruner()

    def objective(self, optuna_trial, context, lock):
        return rerlhf.objective(optuna_trial, self, context, lock)

    def conclude(self, uri: str, launch_run: str) -> list[str]:
        return rerlhf_verdicts.conclude(self, uri, launch_run)


def as_kind(study: spec.Study | rerlhf_spec.Study) -> IRLStudy | RerlhfStudy:
    """The runner's view of a study loaded by fairl.study.spec or fairl.study.rerlhf_spec."""
    if isinstance(study, IRLStudy | RerlhfStudy):
        return study
    cls = RerlhfStudy if isinstance(study, rerlhf_spec.Study) else IRLStudy
    return cls(**{field.name: getattr(study, field.name) for field in dataclasses.fields(study)})


def load_kind(path: str | Path, raw: Any = None) -> IRLStudy | RerlhfStudy:
    """A study file of either kind (fairl.study.files), validated, as the runner runs it."""
    return as_kind(load_study_file(path, raw))
