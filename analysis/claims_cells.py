"""Where each claim of the paper is measured: the cells of the claims ledger (analysis.claims).

A cell is one comparison on one set of held-out pairs, oriented so that "better" (the metric's
direction, fairl.stats.verdict) is what the paper claims. `Ledger` finds the studies
(`Options.study`: the report's world), loads each run's rewards once and bootstraps through one
fairl.study.verdicts.Bootstraps, so every contrast on a test set shares its draws. Cells are
grouped by analysis.common.world_of (the runs' `world` tag; SIR by its m).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import norm

from analysis.common import bootstrap_rows, fmt, objective_label, world_of
from fairl.runs.read import MissingStudy, StudyRuns, TrialRun
from fairl.stats import ACCURACY, F1, ROC_AUC, STARC, BootstrapComparison, PromptMetric
from fairl.study.verdicts import BOOT_SEED, N_BOOT, Bootstraps, load_rewards, paired_cells

HARD_SHARE = 0.25  # "ambiguous or an error": r* margin within the lowest quarter of the test's
SHORT = {"tnt_fraction": "T→NT", "misspecification": "m", "beta": "β", "rounds": "rounds"}


def world_order(worlds) -> list[str]:
    return sorted(worlds, key=lambda w: (w != "embedded", not w.startswith("SIR"), w))


@dataclasses.dataclass
class Cell:
    """One comparison behind a claim ("better" = the paper's direction)."""

    world: str
    condition: str  # where, in words: study and context
    what: str  # e.g. "FA-IRL vs standard IRL"
    comparison: BootstrapComparison
    runs: list[TrialRun]
    relative: bool = False  # the claim is a relative change (STARC "by up to 24 %")
    show_values: bool = True  # a and b mean something (not a contrast of four arms)
    text: str = ""  # replaces the generated measured text
    oracle: float | None = None  # the linear oracle's test STARC in this world (room to improve)


@dataclasses.dataclass
class Judged:
    """A claim judged without a bootstrap (Theorem 1: linear programs)."""

    world: str
    measured: str
    verdict: str
    runs: list[str]
    record: dict


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str
    studies: tuple[str, ...]  # what measures it; the first names the command when missing
    measure: Callable[[Ledger], list[Cell] | Judged]


def words(stem: str, context: dict) -> str:
    parts = [objective_label(str(v)) if k == "objective" else f"{SHORT.get(k, k)} {v}"
             for k, v in context.items() if k != "misspecification"]
    return f"{stem}: " + (", ".join(parts) or "all")


class Ledger:
    """The studies, rewards and bootstraps of one ledger build, and the runs it used."""

    def __init__(self, options):
        self.options = options
        self.bootstraps = Bootstraps()
        self._studies: dict[str, StudyRuns | MissingStudy] = {}
        self._rewards: dict[str, object] = {}
        self._sources: dict[str, StudyRuns] = {}
        self.used: dict[str, tuple[TrialRun, str]] = {}
        self.fa_cells: list[tuple[Cell, float]] = []  # the STARC claim's cells, Holm p

    def study(self, stem: str) -> StudyRuns | None:
        if stem not in self._studies:
            try:
                self._studies[stem] = self.options.study(stem)  # on the report's world
            except MissingStudy as missing:
                self._studies[stem] = missing
        found = self._studies[stem]
        return found if isinstance(found, StudyRuns) else None

    @property
    def sources(self) -> list[StudyRuns]:
        return [s for s in self._studies.values() if isinstance(s, StudyRuns) and s.runs]

    def raise_missing(self) -> None:
        self.study("main_table")
        raise self._studies["main_table"]

    def command(self, stem: str) -> str:
        found = self._studies.get(stem)
        if isinstance(found, MissingStudy):
            return found.command
        return f"fairl study run studies/{stem}.yaml"

    def rewards(self, source: StudyRuns, run: TrialRun):
        if run.run_id not in self._rewards:
            self._rewards[run.run_id] = load_rewards(source.artifact(run, "rewards.npz"))
            self._sources[run.run_id] = source
        return self._rewards[run.run_id]

    def evidence(self, cell: Cell) -> tuple:
        """What a cell rests on: its comparison and the digests of its runs' test rewards (one
        configuration run by two studies on one world is one piece of evidence)."""
        digests = []
        for run in cell.runs:
            rewards = self.rewards(self._sources[run.run_id], run) \
                if run.run_id in self._sources else None
            digests.append(run.run_id if rewards is None else hashlib.sha256(
                rewards.R_T.tobytes() + rewards.R_NT.tobytes()
                + repr(rewards.seeds).encode()).hexdigest())
        return (cell.what, *digests)

    def contrast(self, metric: PromptMetric, source: StudyRuns, runs: list[TrialRun],
                 weights: list[float]) -> BootstrapComparison:
        return self.bootstraps.contrast(
            metric, [(run.run_id, self.rewards(source, run)) for run in runs], weights)

    def cell(self, source, stem, context, what, comparison, runs, scored: bool = True,
             **extra) -> Cell:
        """`scored`: IRL trial runs, whose test rewards (rewards.npz) are the cell's evidence;
        False for re-RLHF policy runs, which have none (their run ids are the evidence)."""
        for run in runs:
            if scored:
                self._sources.setdefault(run.run_id, source)
            self.used.setdefault(run.run_id, (run, f"{stem}: {run.name}"))
        return Cell(world_of(runs[0]), words(stem, context), what, comparison, runs, **extra)

    def fa_cell_count(self) -> int:
        return len(self.fa_cells)

    def fa_vs_standard_cells(self) -> list[tuple[Cell, float]]:
        return self.fa_cells


# --- the measures -------------------------------------------------------------------------------

def _pairs(source: StudyRuns, label: str = "fa_irl"):
    return [(c, run, ref) for c, run, ref in paired_cells(source) if (run.variant or run.method)
            == label]


def fa_vs_standard(metric_key: str, metric: PromptMetric, stems: tuple[str, ...],
                   relative: bool = False, rounds: int | None = 100):
    """FA-IRL − standard IRL cells of `metric` in every study; a study whose launch has no
    such verdict rows (its verdict_metrics) is bootstrapped here, at `rounds` if it has them."""
    def measure(ledger: Ledger) -> list[Cell]:
        cells = []
        for stem in stems:
            source = ledger.study(stem)
            if source is None:
                continue
            found = {k: row for k, row in bootstrap_rows(source).items() if k[2] == metric_key}
            for context, run, ref in _pairs(source):
                if found:
                    row = found.get((json.dumps(context, sort_keys=True), "fa_irl", metric_key))
                    if row is None:
                        continue
                    comparison = row.comparison
                elif rounds is not None and context.get("rounds") == rounds:
                    comparison = ledger.contrast(metric, source, [run, ref], [1.0, -1.0])
                else:
                    continue
                cells.append(ledger.cell(source, stem, context, "FA-IRL vs standard IRL",
                                         comparison, [run, ref], relative=relative,
                                         oracle=_oracle(source, context) if relative else None))
        return cells
    return measure


def _oracle(source: StudyRuns, context: dict) -> float | None:
    """The launch run's linear oracle for the cell's world (per searched m when logged)."""
    metrics = source.launch_metrics
    if "misspecification" in context:
        key = f"reference_oracle_test_starc/misspecification:{context['misspecification']}"
        if key in metrics:
            return metrics[key]
    return metrics.get("reference_oracle_test_starc")


def _ends(ledger: Ledger, stems: tuple[str, ...], axis: str):
    """(source, stem, other context, (run, ref) at the smallest and at the largest value of
    context key `axis`) for every FA-IRL cell group of the studies that vary `axis`."""
    for stem in stems:
        source = ledger.study(stem)
        if source is None:
            continue
        groups: dict[str, dict[float, tuple]] = {}
        for context, run, ref in _pairs(source):
            if axis in context:
                rest = {k: v for k, v in context.items() if k != axis}
                groups.setdefault(json.dumps(rest, sort_keys=True), {})[
                    float(context[axis])] = (run, ref)
        for rest, found in groups.items():
            low, high = min(found), max(found)
            if low != high:
                yield source, stem, json.loads(rest), (low, *found[low]), (high, *found[high])


def tnt_gain(ledger: Ledger) -> list[Cell]:
    """(FA − std at the highest T→NT share) − (FA − std at the lowest), per other context."""
    cells = []
    for source, stem, rest, (low, *at_low), (high, *at_high) in _ends(
            ledger, ("tnt_fraction", "regime_map", "misspecification"), "tnt_fraction"):
        runs = [*at_high, *at_low]
        cells.append(ledger.cell(source, stem, rest,
                                 f"STARC gain at T→NT {high:g} minus gain at {low:g}",
                                 ledger.contrast(STARC, source, runs, [1.0, -1.0, -1.0, 1.0]),
                                 runs, show_values=False))
    return cells


def more_constraints(ledger: Ledger) -> list[Cell]:
    """FA-IRL's STARC at the largest n minus at the smallest, per other context."""
    cells = []
    for source, stem, rest, (small, run_small, _), (large, run_large, _) in _ends(
            ledger, ("identifiability", "misspecification"), "n"):
        runs = [run_large, run_small]
        cells.append(ledger.cell(source, stem, rest, f"FA-IRL STARC at n {large:g} vs {small:g}",
                                 ledger.contrast(STARC, source, runs, [1.0, -1.0]), runs))
    return cells


def variant_against(stem: str, label: str, other: str, what: str):
    """STARC of variant `label` − variant `other` of the same objective in one study."""
    def measure(ledger: Ledger) -> list[Cell]:
        source = ledger.study(stem)
        if source is None:
            return []
        found = {(run.objective, run.variant or run.method): run for run in source.runs}
        return [ledger.cell(source, stem, {"objective": objective}, what,
                            ledger.contrast(STARC, source, [run, found[(objective, other)]],
                                            [1.0, -1.0]), [run, found[(objective, other)]])
                for (objective, variant), run in found.items()
                if variant == label and (objective, other) in found]
    return measure


def lambda_decay(ledger: Ledger) -> list[Cell]:
    """The paper's decayed λ_t (λ_0 = 10) against every fixed λ of the ablation."""
    source = ledger.study("ablation_fixed_lambda")
    if source is None:
        return []
    found = {(run.objective, float(run.param("fit.lambda0")), bool(run.param("fit.lambda_fixed"))):
             run for run in source.runs if "fit.lambda_fixed" in run.params}
    cells = []
    for (objective, lambda0, fixed), run in sorted(found.items()):
        decayed = found.get((objective, 10.0, False))
        if fixed and decayed is not None:
            cells.append(ledger.cell(source, "ablation_fixed_lambda",
                                     {"objective": objective, "fixed λ": lambda0},
                                     f"decayed λ_0 = 10 vs fixed λ = {lambda0:g}",
                                     ledger.contrast(STARC, source, [decayed, run], [1.0, -1.0]),
                                     [decayed, run]))
    return cells


def hard_failures(ledger: Ledger) -> list[Cell]:
    """Share of FA-IRL's top-k failures (failures.csv) that r* calls ambiguous or wrong (r*
    margin in the lowest quarter of the test pairs'), minus that share among the test pairs."""
    source = ledger.study("main_table")
    if source is None:
        return []
    cells = []
    for run in source.runs:
        if run.method != "fa_irl":
            continue
        frame = pd.read_csv(source.artifact(run, "failures.csv"))
        test = ledger.rewards(source, run)
        if frame.empty or "gt_margin" not in frame or test.gt_T is None:
            continue
        comparison, cut, errors = _hard_share(frame, test)
        cells.append(ledger.cell(
            source, "main_table", {"objective": run.objective}, "hard share", comparison, [run],
            text=(f"{comparison.a:.0%} of the top failures have an r* margin ≤ {_minus(cut)} "
                  f"(the test pairs' lowest quarter: {comparison.b:.0%}; {errors:.0%} reversed "
                  f"by r*): Δ {_minus(comparison.difference, '+')} [{_minus(comparison.ci_low, '+')}"
                  f", {_minus(comparison.ci_high, '+')}] (main_table: "
                  f"{objective_label(run.objective)})")))
    return cells


def _minus(value: float, sign: str = "") -> str:
    return f"{value:{sign}.3f}".replace("-", "−")


def _hard_share(frame: pd.DataFrame, test) -> tuple[BootstrapComparison, float, float]:
    """Prompt × seed bootstrap of the failures' hard share minus the test pairs' (prompts
    resampled in both, seeds in the failures)."""
    margins = np.asarray(test.gt_T, float) - np.asarray(test.gt_NT, float)
    cut = float(np.quantile(margins, HARD_SHARE))
    hit = (frame["gt_margin"].to_numpy(float) <= cut).astype(float)
    _, prompts = np.unique(frame["prompt_id"].astype(str), return_inverse=True)
    _, seeds = np.unique(frame["seed"], return_inverse=True)
    P, S = prompts.max() + 1, seeds.max() + 1
    hits, counts = np.zeros((P, S)), np.zeros((P, S))
    np.add.at(hits, (prompts, seeds), hit)
    np.add.at(counts, (prompts, seeds), 1.0)
    _, test_codes = np.unique(test.prompt_ids, return_inverse=True)
    test_hits = np.bincount(test_codes, weights=(margins <= cut).astype(float))
    test_counts = np.bincount(test_codes).astype(float)
    rng = np.random.default_rng(BOOT_SEED)
    prompt_w = rng.multinomial(P, np.full(P, 1 / P), size=N_BOOT).astype(float)
    seed_w = rng.multinomial(S, np.full(S, 1 / S), size=N_BOOT).astype(float)
    test_w = rng.multinomial(len(test_counts), np.full(len(test_counts), 1 / len(test_counts)),
                             size=N_BOOT).astype(float)
    share = ((prompt_w @ hits) * seed_w).sum(1) / ((prompt_w @ counts) * seed_w).sum(1)
    diff = share - (test_w @ test_hits) / (test_w @ test_counts)
    point_a, point_b = hit.mean(), test_hits.sum() / test_counts.sum()
    low, high = np.quantile(diff, [0.025, 0.975])
    p = min(1.0, 2 * min(np.sum(diff <= 0) + 1, np.sum(diff >= 0) + 1) / (N_BOOT + 1))
    se = float(diff.std(ddof=1))
    comparison = BootstrapComparison(
        "hard_share", False, float(point_a), float(point_b), float(point_a - point_b),
        float(low), float(high), se, float(p), float(np.mean(diff > 0)),
        float((norm.ppf(0.975) + norm.ppf(0.8)) * se), int(P), int(S), N_BOOT)
    return comparison, cut, float((frame["gt_margin"] < 0).mean())


def theorem_1(ledger: Ledger) -> Judged:
    """F_FA ⊆ F measured by linear programs (analysis.feasible_width, no study)."""
    from analysis.feasible_width import DEFAULT_COUNT, DEFAULT_FACTOR, measure

    data, constants = measure()
    default = data[(data["m_fail_factor"] == DEFAULT_FACTOR)
                   & (data["failure_pairs"] == DEFAULT_COUNT)]["ratio"]
    subset = bool((data["ratio"].dropna() <= 1 + 1e-9).all())
    strict = float((default < 1 - 1e-9).mean())
    measured = (f"median width ratio |F_FA|/|F| {fmt(default.median())} (quartiles "
                f"{fmt(default.quantile(0.25))}–{fmt(default.quantile(0.75))}; {DEFAULT_COUNT} "
                f"failure pairs at M_fail = {DEFAULT_FACTOR:g}M); narrower in {strict:.0%} of "
                f"{len(default)} directions, wider in none of {len(data)}")
    word = "reproduced" if subset and strict > 0 else "not reproduced"
    return Judged(f"planted, noise-free (d = {constants['d']}, {constants['pairs']} pairs)",
                  measured, word + " (linear programs, no run)", [],
                  {"verdict": word, "median_ratio": default.median(),
                   "strictly_narrower_share": strict})


def rerlhf(ledger: Ledger) -> list[Cell] | Judged:
    """Toxic rate of re-RLHF on FA-IRL's vs standard IRL's reward, one cell per judge: the
    policy runs' per-sample toxicities bootstrapped over prompts × seeds (the launch's
    verdicts, fairl.study.rerlhf_verdicts), with r*'s own policy's rate beside them."""
    from analysis.rerlhf import by_source, policy_runs, seed_values
    from fairl.runs.store import default_tracking_uri
    from fairl.study.rerlhf_verdicts import study_rows

    uri = ledger.options.uri
    study_file = ledger.options.experiment(RERLHF)[1]  # with --world SPEC on another world
    hint = f"fairl rerlhf run {study_file}" + ("" if uri == default_tracking_uri()
                                              else f" --tracking-uri {uri}")
    try:
        source = policy_runs(ledger.options, RERLHF, hint)
    except MissingStudy as missing:
        ledger._studies["rerlhf"] = missing
        return []
    ledger._studies["rerlhf"] = source
    by_id = {run.run_id: run for run in source.runs}
    rates = {name: float(np.mean(list(seed_values(runs, "tox_rate_bilstm").values())))
             for name, runs in by_source(source).items()}
    truth, cells = rates.get("ground_truth"), []
    for row in study_rows(source):
        if (row.label, row.reference) != ("fa_irl", "standard_irl"):
            continue
        runs = [by_id[run_id] for run_id in f"{row.run_id},{row.reference_run_id}".split(",")]
        judge = row.metric.removeprefix("tox_rate_")
        cells.append(ledger.cell(source, "rerlhf", {"judge": judge}, "FA-IRL vs standard IRL",
                                 row.comparison, runs, scored=False))
        if truth is not None and judge == "bilstm":  # `rates` are the BiLSTM's
            cells[-1].condition += f" (r*'s own policy: {100 * truth:.1f} %)"
    if cells:
        return cells
    measured = ", ".join(f"{name} {100 * rate:.1f} %" for name, rate in rates.items())
    for run in source.runs:
        ledger.used.setdefault(run.run_id, (run, f"rerlhf: {run.name}"))
    return Judged(world_of(source.runs[0]) if source.runs else "embedded",
                  measured + " (BiLSTM judge)",
                  "not judged: no seed has both an FA-IRL and a standard-IRL policy run",
                  [run.run_id for run in source.runs], {"verdict": "not judged", **rates})


RERLHF = "rerlhf/rerlhf"  # studies/rerlhf/rerlhf.yaml
CLASSIFICATION = ("main_table", "budget_sir")
STARC_STUDIES = ("main_table", "tnt_fraction", "identifiability", "regime_map",
                 "misspecification", "budget", "budget_sir")
CLAIMS = (
    Claim("f1", "FA-IRL separates aligned from base outputs better: F1", "0.802 vs 0.727",
          CLASSIFICATION, fa_vs_standard("test_f1", F1, CLASSIFICATION)),
    Claim("roc_auc", "… and ROC-AUC", "0.922 vs 0.892", CLASSIFICATION,
          fa_vs_standard("test_roc_auc", ROC_AUC, CLASSIFICATION)),
    Claim("accuracy", "… and accuracy", "higher (no number)", CLASSIFICATION,
          fa_vs_standard("test_accuracy", ACCURACY, CLASSIFICATION)),
    Claim("starc", "FA-IRL's reward is closer to r*: STARC reduced by up to 24 %",
          "−24 % (best condition)", STARC_STUDIES,
          fa_vs_standard("test_starc", STARC, STARC_STUDIES, relative=True, rounds=None)),
    Claim("rerlhf", "Re-RLHF on FA-IRL's reward is less toxic",
          "6 % (FA-IRL) vs 9 % (standard IRL) vs 4 % (r*)", ("rerlhf",), rerlhf),
    Claim("theorem_1", "Failure constraints shrink the feasible set (Theorem 1)", "F_FA ⊊ F",
          ("feasible_width",), theorem_1),
    Claim("tnt_share", "FA-IRL's gain grows with the T→NT share", "grows with the share",
          ("tnt_fraction", "regime_map", "misspecification"), tnt_gain),
    Claim("failures", "Failures are genuine ambiguities or errors (top-k inspection)",
          "qualitative", ("main_table",), hard_failures),
    Claim("lambda_decay", "A decayed λ_t beats a fixed λ", "λ_0 = 10 decayed vs fixed λ ∈ "
          "{1, 5, 10, 20}", ("ablation_fixed_lambda",), lambda_decay),
    Claim("failure_path", "The failure path R_F contributes (vs the failure loss on R_D)",
          "dual path helps", ("ablation_no_rf",),
          variant_against("ablation_no_rf", "fa_irl", "failure_reweight_no_rf",
                          "FA-IRL vs no R_F")),
    Claim("constraints", "STARC falls as constraints (pairs) are added", "falls",
          ("identifiability", "misspecification"), more_constraints),
)
