"""A study's verdicts: every configuration against standard IRL, from the trials' rewards.npz.

Cells. Runs are paired by their *context*: every logged param except `variant`, `seeds` and
the fit.* fields the study's variants set (those are what the variants change). In a
context, each run that is not standard IRL is compared with the standard IRL run (the
latest, if several) — e.g. main_table: FA-IRL vs standard IRL per objective; tnt_fraction:
per (objective, T→NT fraction).

Numbers. For STARC and pairwise accuracy (the metrics fairl.stats resamples), each row is
`fairl.stats.paired_bootstrap` of A − B over test prompts × seeds (n_boot = N_BOOT,
np.random.default_rng(BOOT_SEED) for every row), and `fairl.stats.verdicts` Holm-adjusts all
rows of the study together. `run_study` logs these rows on the launch run (metrics and
verdicts.json) and `fairl report` rebuilds the same rows, so MLflow and the report agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fairl.runs.read import StudyRuns, TrialRun, param_value, seeds_of
from fairl.stats import (
    PAIRWISE_ACCURACY,
    STARC,
    BootstrapComparison,
    PromptMetric,
    paired_bootstrap,
    verdicts,
)

N_BOOT = 5000
BOOT_SEED = 0
REFERENCE_METHOD = "standard_irl"
# Test metrics with a prompt × seed bootstrap, in table order.
BOOTSTRAP_METRICS: dict[str, PromptMetric] = {"test_pairwise_accuracy": PAIRWISE_ACCURACY,
                                              "test_starc": STARC}
VERDICT_CODES = {"better": 1, "worse": -1, "no detectable difference": 0}


class NoPromptIds(ValueError):
    """Trial runs whose rewards.npz lacks test_prompt_ids (logged before they were stored)."""

    def __init__(self, run_ids: list[str]):
        self.run_ids = run_ids
        super().__init__(f"rewards.npz of run(s) {', '.join(run_ids)} has no test_prompt_ids "
                         "(logged before they were stored): the prompt bootstrap needs them")


@dataclasses.dataclass(frozen=True)
class TestRewards:
    """A run's held-out rewards per seed (rows in `seeds` order), r* and prompt ids."""

    seeds: list[int]
    R_T: np.ndarray  # (S, n)
    R_NT: np.ndarray
    gt_T: np.ndarray | None
    gt_NT: np.ndarray | None
    prompt_ids: np.ndarray | None


def load_rewards(path: str | Path) -> TestRewards:
    """The test rewards of a trial's rewards.npz (fairl.runs.write.rewards_npz)."""
    with np.load(path) as data:
        seeds = seeds_of(data.files, "test_R_T")
        stack = [np.stack([data[f"seed{seed}/test_R_{side}"] for seed in seeds])
                 for side in ("T", "NT")]
        optional = [data[key] if key in data.files else None
                    for key in ("test_gt_T", "test_gt_NT", "test_prompt_ids")]
    return TestRewards(seeds, stack[0], stack[1], *optional)


@dataclasses.dataclass(frozen=True)
class Row:
    """One comparison: `label` (a variant or method) vs `reference` in `context` on `metric`."""

    context: dict[str, Any]
    label: str
    metric: str
    run_id: str
    reference_run_id: str
    comparison: BootstrapComparison
    p_holm: float
    verdict: str
    text: str
    reference: str = REFERENCE_METHOD  # a re-RLHF row's: standard_irl or ground_truth

    def as_dict(self) -> dict[str, Any]:
        return {"context": self.context, "label": self.label, "reference": self.reference,
                "metric": self.metric, "run_id": self.run_id,
                "reference_run_id": self.reference_run_id, "p_holm": self.p_holm,
                "verdict": self.verdict, "text": self.text,
                **dataclasses.asdict(self.comparison)}


def _context_keys(runs: StudyRuns) -> tuple[set[str], list[str]]:
    """(params that define a method, params that vary between contexts)."""
    variants = runs.spec.get("variants") or {}
    method_keys = {"variant", "seeds"} | {f"fit.{key}" for overrides in variants.values()
                                          for key in overrides}
    shared = [key for key in sorted({k for run in runs.runs for k in run.params})
              if key not in method_keys]
    varying = [key for key in shared if len({run.params.get(key) for run in runs.runs}) > 1]
    return method_keys, varying


def label_of(run: TrialRun) -> str:
    return run.variant or run.method


def paired_cells(runs: StudyRuns) -> list[tuple[dict[str, Any], TrialRun, TrialRun]]:
    """(context, run, standard IRL run of that context) for every non-reference run."""
    method_keys, varying = _context_keys(runs)
    groups: dict[str, list[TrialRun]] = {}
    for run in runs.runs:  # sorted by trial: the latest reference of a context wins
        key = json.dumps({k: v for k, v in run.params.items() if k not in method_keys},
                         sort_keys=True)
        groups.setdefault(key, []).append(run)
    cells = []
    for members in groups.values():
        references = [run for run in members if run.method == REFERENCE_METHOD]
        if not references:
            continue
        context = {key.removeprefix("fit.").removeprefix("world.compose.").removeprefix(
            "world.options."): param_value(members[0].params[key])
            for key in varying if key in members[0].params}
        cells += [(context, run, references[-1]) for run in members
                  if run.method != REFERENCE_METHOD]
    return cells


def compare(metric: PromptMetric, a: TestRewards, b: TestRewards, *, n_boot: int = N_BOOT,
            seed: int = BOOT_SEED) -> BootstrapComparison:
    """fairl.stats.paired_bootstrap of A − B on their common seeds (same test pairs)."""
    if a.prompt_ids is None or b.prompt_ids is None:
        raise ValueError("no test_prompt_ids")
    if not np.array_equal(a.prompt_ids, b.prompt_ids):
        raise ValueError("the two runs were scored on different test pairs")
    seeds = [s for s in a.seeds if s in b.seeds]
    rows_a, rows_b = ([r.seeds.index(s) for s in seeds] for r in (a, b))
    gt = None if a.gt_T is None else (a.gt_T, a.gt_NT)
    return paired_bootstrap(metric, (a.R_T[rows_a], a.R_NT[rows_a]),
                            (b.R_T[rows_b], b.R_NT[rows_b]), a.prompt_ids, gt,
                            n_boot=n_boot, rng=np.random.default_rng(seed))


def study_rows(runs: StudyRuns, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> list[Row]:
    """Every cell × bootstrap metric of the study, Holm-adjusted together (NoPromptIds if a
    compared run lacks test prompt ids)."""
    cells = paired_cells(runs)
    rewards: dict[str, TestRewards] = {}
    for _, run, reference in cells:
        for item in (run, reference):
            if item.run_id not in rewards:
                rewards[item.run_id] = load_rewards(runs.artifact(item, "rewards.npz"))
    missing = sorted(run_id for run_id, value in rewards.items() if value.prompt_ids is None)
    if missing:
        raise NoPromptIds(missing)
    pending = []
    for context, run, reference in cells:
        a, b = rewards[run.run_id], rewards[reference.run_id]
        for name, metric in BOOTSTRAP_METRICS.items():
            if metric is STARC and a.gt_T is None:
                continue
            pending.append((context, run, reference, name,
                            compare(metric, a, b, n_boot=n_boot, seed=seed)))
    judged = verdicts([item[-1] for item in pending])
    return [Row(context, label_of(run), name, run.run_id, reference.run_id, comparison,
                v.p_adjusted, v.verdict, v.text)
            for (context, run, reference, name, comparison), v in zip(pending, judged)]


def row_key(row: Row) -> str:
    """The MLflow metric prefix of a row: verdict/<label> vs <reference>/<context>/<metric>."""
    context = " ".join(f"{key}:{value}" for key, value in row.context.items()) or "all"
    return f"verdict/{row.label} vs {row.reference}/{context}/{row.metric}"


def row_metrics(rows: list[Row]) -> dict[str, float]:
    """Flat MLflow metrics of the rows (verdict: +1 better, −1 worse, 0 no detectable)."""
    metrics = {}
    for row in rows:
        c, key = row.comparison, row_key(row)
        values = {"difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high,
                  "prob_better": c.prob_a_better, "p_holm": row.p_holm, "mde": c.mde,
                  "verdict": VERDICT_CODES[row.verdict]}
        metrics.update({f"{key}/{name}": float(value) for name, value in values.items()
                        if math.isfinite(value)})
    return metrics


def verdicts_json(rows: list[Row], references: dict[str, float]) -> str:
    """verdicts.json of the launch run: the rows and the room-to-improve references."""
    return json.dumps({"n_boot": N_BOOT, "boot_seed": BOOT_SEED,
                       "rows": [row.as_dict() for row in rows], "references": references},
                      indent=1, sort_keys=True, default=float)
