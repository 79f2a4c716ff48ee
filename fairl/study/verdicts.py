"""A study's verdicts: every configuration against standard IRL, from the trials' rewards.npz.

Cells. Runs are paired by their *context*: every logged param except `variant`, `seeds` and
the fit.* fields the study's variants set (those are what the variants change). In a
context, each run that is not standard IRL is compared with the standard IRL run (the
latest, if several) — e.g. main_table: FA-IRL vs standard IRL per objective; tnt_fraction:
per (objective, T→NT fraction).

Numbers. For every held-out metric (accuracy, F1, ROC-AUC, pairwise accuracy, STARC), each
row is the paired bootstrap of A − B over test prompts × seeds (fairl.stats.Bootstrap:
n_boot = N_BOOT, the draws of np.random.default_rng(BOOT_SEED), one set per test set, so a
run's replicates are computed once however many rows it is in), and `fairl.stats.verdicts`
Holm-adjusts the rows of one metric across the study's cells (one family per metric). A
study file's `verdict_metrics` narrows the metrics (a STARC map needs only STARC).
`run_study` logs these rows on the launch run (metrics and verdicts.json) and `fairl report`
rebuilds the same rows, so MLflow and the report agree.
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
    ACCURACY,
    F1,
    PAIRWISE_ACCURACY,
    ROC_AUC,
    STARC,
    Bootstrap,
    BootstrapComparison,
    PromptMetric,
    verdicts,
)

N_BOOT = 5000
BOOT_SEED = 0
REFERENCE_METHOD = "standard_irl"
# Test metrics with a prompt × seed bootstrap, in table order.
BOOTSTRAP_METRICS: dict[str, PromptMetric] = {
    "test_accuracy": ACCURACY, "test_f1": F1, "test_roc_auc": ROC_AUC,
    "test_pairwise_accuracy": PAIRWISE_ACCURACY, "test_starc": STARC}
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


class Bootstraps:
    """One fairl.stats.Bootstrap per test set (prompt ids and r*), keyed by its bytes: every
    comparison on the same test pairs shares the draws and each run's replicates."""

    def __init__(self, n_boot: int = N_BOOT, seed: int = BOOT_SEED):
        self.n_boot, self.seed = n_boot, seed
        self._by_test_set: dict[bytes, Bootstrap] = {}

    def contrast(self, metric: PromptMetric, arms: list[tuple[str, TestRewards]],
                 weights: list[float]) -> BootstrapComparison:
        """Σ c_k · metric(run k) on the runs' common seeds; `arms` = (run id, rewards)."""
        first = arms[0][1]
        if any(arm.prompt_ids is None for _, arm in arms):
            raise ValueError("no test_prompt_ids")
        same = [np.array_equal(first.prompt_ids, arm.prompt_ids) and (
            first.gt_T is None or (np.array_equal(first.gt_T, arm.gt_T)
                                   and np.array_equal(first.gt_NT, arm.gt_NT)))
            for _, arm in arms]
        if not all(same):  # prompt ids alone can agree on other pairs (SIR at another m)
            raise ValueError("the runs were scored on different test pairs")
        seeds = [s for s in first.seeds if all(s in arm.seeds for _, arm in arms)]
        gt = None if first.gt_T is None else (first.gt_T, first.gt_NT)
        key = first.prompt_ids.tobytes() + (b"" if gt is None else gt[0].tobytes()
                                            + gt[1].tobytes())
        if key not in self._by_test_set:
            self._by_test_set[key] = Bootstrap(first.prompt_ids, gt, n_boot=self.n_boot,
                                               rng=np.random.default_rng(self.seed))
        rewards = []
        for _, arm in arms:
            rows = [arm.seeds.index(s) for s in seeds]
            rewards.append((arm.R_T[rows], arm.R_NT[rows]))
        return self._by_test_set[key].contrast(
            metric, rewards, weights, keys=[(run_id, tuple(seeds)) for run_id, _ in arms])


def compare(metric: PromptMetric, a: TestRewards, b: TestRewards, *, n_boot: int = N_BOOT,
            seed: int = BOOT_SEED) -> BootstrapComparison:
    """The paired prompt × seed bootstrap of A − B on their common seeds (same test pairs)."""
    return Bootstraps(n_boot, seed).contrast(metric, [("a", a), ("b", b)], [1.0, -1.0])


def study_rows(runs: StudyRuns, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> list[Row]:
    """Every cell × bootstrap metric of the study, Holm-adjusted per metric across the cells
    (NoPromptIds if a compared run lacks test prompt ids)."""
    cells = paired_cells(runs)
    rewards: dict[str, TestRewards] = {}
    for _, run, reference in cells:
        for item in (run, reference):
            if item.run_id not in rewards:
                rewards[item.run_id] = load_rewards(runs.artifact(item, "rewards.npz"))
    missing = sorted(run_id for run_id, value in rewards.items() if value.prompt_ids is None)
    if missing:
        raise NoPromptIds(missing)
    bootstraps = Bootstraps(n_boot, seed)
    chosen = (runs.spec or {}).get("verdict_metrics") or list(BOOTSTRAP_METRICS)
    pending = []
    for context, run, reference in cells:
        arms = [(run.run_id, rewards[run.run_id]), (reference.run_id, rewards[reference.run_id])]
        for name, metric in BOOTSTRAP_METRICS.items():
            if name not in chosen:
                continue
            if metric is STARC and arms[0][1].gt_T is None:
                continue
            pending.append((context, run, reference, name,
                            bootstraps.contrast(metric, arms, [1.0, -1.0])))
    judged: dict[int, object] = {}
    for name in BOOTSTRAP_METRICS:  # one Holm family per metric
        members = [index for index, item in enumerate(pending) if item[3] == name]
        judged.update(zip(members, verdicts([pending[index][-1] for index in members])))
    return [Row(context, label_of(run), name, run.run_id, reference.run_id, comparison,
                judged[index].p_adjusted, judged[index].verdict, judged[index].text)
            for index, (context, run, reference, name, comparison) in enumerate(pending)]


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
