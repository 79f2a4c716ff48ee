"""Shared by the analysis items: names in words, statistics over seeds, table and figure files."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from fairl.runs.read import MissingStudy
from fairl.study.verdicts import NoPromptIds, study_rows

# --- names in words ----------------------------------------------------------------------------

METHODS = {
    "standard_irl": "standard IRL",
    "fa_irl": "FA-IRL",
    "failure_reweight_no_rf": "failure loss on R_D (no R_F)",
    "dual_path_no_failures": "R_F without failure loss",
}
VARIANTS = {
    **METHODS,
    "ground_truth_failures": "failures from r* (ground truth)",
    "margin_failures": "failures from margins (default)",
    "ensemble_failures": "failures from ensemble disagreement",
    "no_failures": "no failures, R_F kept",
}
OBJECTIVES = {"max_margin": "max-margin", "max_entropy": "max-entropy"}
# Held-out metrics in table order: (key, short name, axis label with its unit/range).
METRICS = (
    ("test_accuracy", "accuracy", "accuracy (fraction of outputs, 0–1)"),
    ("test_f1", "F1", "F1 score (0–1)"),
    ("test_roc_auc", "ROC-AUC", "ROC-AUC (0–1)"),
    ("test_pairwise_accuracy", "pairwise acc.", "pairwise accuracy (fraction of pairs, 0–1)"),
    ("test_starc", "STARC", "STARC to r* (0–1, lower better)"),
)
METRIC_NAMES = {key: short for key, short, _ in METRICS}
METRIC_AXES = {key: axis for key, _, axis in METRICS}
COLORS = {"standard IRL": "#4c72b0", "FA-IRL": "#dd8452"}


def world_of(run) -> str:
    """The world a trial run was measured in, in words: its `world` tag (default: the
    embedded world), the SIR world with its misspecification m (0 when not set)."""
    world = run.tags.get("world", "?")
    if world == "sir":
        m = run.param("world.options.misspecification") \
            if "world.options.misspecification" in run.params else 0.0
        return f"SIR, m = {float(m):g}"
    return {"default": "embedded"}.get(world, world)


def method_label(name: str | None) -> str:
    return VARIANTS.get(name or "", name or "?")


def objective_label(name: str) -> str:
    return OBJECTIVES.get(name, name)


def objective_order(names) -> list[str]:
    return sorted(set(names), key=lambda name: (list(OBJECTIVES).index(name)
                                                if name in OBJECTIVES else 99, name))


# --- statistics over seeds ---------------------------------------------------------------------

def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean over seeds; NaNs with fewer than 2 values."""
    from scipy import stats

    values = np.asarray(list(values), dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    mean = values.mean()
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(mean - half), float(mean + half)


def paired_tests(treated: dict[int, float], reference: dict[int, float]) -> tuple[float, float, int]:
    """(p of the paired t-test, p of the Wilcoxon signed-rank test, n) over the common seeds.

    Same seed = same world, composition and initialisation draw, so seeds pair the methods.
    NaN when a test is undefined (fewer than 2 pairs, or every difference zero).
    """
    from scipy import stats

    seeds = sorted(set(treated) & set(reference))
    a = np.array([treated[seed] for seed in seeds])
    b = np.array([reference[seed] for seed in seeds])
    if len(seeds) < 2 or np.allclose(a - b, 0):
        return math.nan, math.nan, len(seeds)
    p_t = float(stats.ttest_rel(a, b).pvalue)
    p_w = float(stats.wilcoxon(a, b).pvalue)
    return p_t, p_w, len(seeds)


def paired_t_interval(treated: dict[int, float], reference: dict[int, float],
                      level: float = 0.95) -> tuple[float, float]:
    """t-interval of the mean paired difference treated − reference over the common seeds
    (optimiser and data-resampling noise only: the test pairs are held fixed)."""
    seeds = sorted(set(treated) & set(reference))
    return t_interval([treated[seed] - reference[seed] for seed in seeds], level)


def bootstrap_rows(runs) -> dict[tuple[str, str, str], object]:
    """fairl.study.verdicts.study_rows keyed by (context JSON, label, metric); a study whose
    runs lack test prompt ids is MissingStudy with the rerun as its hint."""
    key = (runs.uri, runs.experiment_id, tuple(run.run_id for run in runs.runs))
    if key not in _ROWS:
        try:
            rows = study_rows(runs)
        except NoPromptIds as error:
            raise MissingStudy(runs.study, runs.study_file, runs.uri, str(error),
                               hint=_rerun(runs)) from None
        _ROWS[key] = {(json.dumps(row.context, sort_keys=True), row.label, row.metric): row
                      for row in rows}
    return _ROWS[key]


# bootstrap_rows per (store, experiment, finished runs): several items read one study, and
# finished runs do not change.
_ROWS: dict[tuple, dict] = {}


def selection_note(runs) -> str:
    """How the shown configurations were chosen, for captions (flags `select_on: test`)."""
    spec = runs.spec or {}
    metrics = ", ".join(str(item.get("metric")) for item in spec.get("objectives") or [])
    pruned = runs.pruned
    pruned = (f" {pruned} trial(s) pruned early by the study's pruner are not shown."
              if pruned else "")
    if spec.get("select_on") == "test":
        return (f"WARNING: this study selected on the TEST split (select_on: test; objectives "
                f"{metrics}), so its test metrics are optimistic.{pruned}")
    return (f"Test metrics of configurations chosen on the validation split (objectives "
            f"{metrics or '?'}); the test split was used for nothing else.{pruned}")


def best_trial_note(runs) -> str:
    """The trial a selection would pick: best mean of the study's first objective (a val_*
    metric unless the study says select_on: test), with its test metrics."""
    objectives = (runs.spec or {}).get("objectives") or []
    if not objectives or not runs.runs:
        return ""
    metric = objectives[0]["metric"]
    lower = (objectives[0].get("direction") or
             ("minimize" if metric.endswith("starc") else "maximize")) == "minimize"
    scored = [run for run in runs.runs if math.isfinite(run.metrics.get(metric, math.nan))]
    if not scored:
        return ""
    best = min(scored, key=lambda run: (run.metrics[metric] * (1 if lower else -1), run.trial))
    shown = ", ".join(f"test {METRIC_NAMES[key]} {fmt(best.metrics[key])}" for key, _, _ in METRICS
                      if key in best.metrics)
    return (f"Selected by {metric} ({'lowest' if lower else 'highest'} mean over seeds): trial "
            f"{best.trial} (`{best.run_id}`), {metric} {fmt(best.metrics[metric])}; {shown}.")


def relative_change(treated: float, reference: float) -> float:
    """(treated − reference) / |reference|, in percent."""
    return 100.0 * (treated - reference) / abs(reference) if reference else math.nan


# --- formatting ----------------------------------------------------------------------------------

def fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def fmt_mean_std(mean: float, std: float | None, digits: int = 3) -> str:
    if std is None or not math.isfinite(std):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_interval(low: float, high: float, digits: int = 3) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_percent(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.1f} %"


# --- tables --------------------------------------------------------------------------------------

def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        # Texts from a world may hold Markdown: escape what would format or split a cell.
        text = " ".join(str(text).split())
        for char in "\\`*_|":
            text = text.replace(char, "\\" + char)
        return re.sub(r"<(?=[A-Za-z/!?])", r"\\<", text)  # HTML tags

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "±": r"$\pm$", "–": "--", "−": "$-$", "<": r"$<$", ">": r"$>$", "λ": r"$\lambda$",
          "τ": r"$\tau$", "Δ": r"$\Delta$", "γ": r"$\gamma$", "→": r"$\to$", "≥": r"$\geq$",
          "×": r"$\times$", "…": r"\dots{}"}


_GREEK = {"λ": r"\lambda", "τ": r"\tau", "γ": r"\gamma", "Δ": r"\Delta"}


def latex_escape(text: str) -> str:
    """Escape for LaTeX text; `x_sub` (e.g. λ_0, R_F, M_fail) becomes math $x_{sub}$."""
    parts = re.split(r"([A-Za-zλτγΔ])_([A-Za-z0-9]+)", str(text))
    out = []
    for index, part in enumerate(parts):
        if index % 3 == 0:
            out.append("".join(_LATEX.get(char, char) for char in part))
        elif index % 3 == 1:
            out.append(f"${_GREEK.get(part, part)}_{{{parts[index + 1]}}}$")
    return "".join(out)


def latex_table(columns: list[str], rows: list[list[str]], caption: str, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * 2 + "r" * (len(columns) - 2) + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(caption)}}}",
              rf"\label{{tab:{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(out: Path, name: str, columns: list[str], rows: list[list[str]], caption: str,
                data) -> list[Path]:
    """tables/<name>.md, .tex (formatted) and .csv (`data`: a DataFrame, full precision)."""
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / f"{name}.md"
    md.write_text(f"{caption}\n\n{markdown_table(columns, rows)}\n", encoding="utf-8")
    tex = folder / f"{name}.tex"
    tex.write_text(latex_table(columns, rows, caption, name), encoding="utf-8")
    csv = folder / f"{name}.csv"
    data.to_csv(csv, index=False, lineterminator="\n")  # full precision (shortest repr)
    return [md, tex, csv]


# --- figures -------------------------------------------------------------------------------------

def figure_style() -> None:
    """Agg backend, seaborn's whitegrid look, fonts large enough to read in a report."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.15)
    matplotlib.rcParams.update({"svg.hashsalt": "fairl", "figure.dpi": 100,
                                "axes.titleweight": "bold", "legend.frameon": True})


def save_figure(fig, out: Path, name: str) -> list[Path]:
    """figures/<name>.png and .pdf without timestamps or version strings (byte-stable)."""
    import matplotlib.pyplot as plt

    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    fig.savefig(png, dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(pdf, bbox_inches="tight",
                metadata={"Creator": None, "Producer": None, "CreationDate": None})
    plt.close(fig)
    return [png, pdf]


def remove_outputs(out: Path, name: str) -> None:
    """Delete an item's earlier files, so a rebuilt item leaves nothing stale behind."""
    for folder in ("tables", "figures"):
        for path in (out / folder).glob(f"{name}.*"):
            path.unlink()


def study_data(options, name: str, stem: str, extract, missing: str, load=None):
    """An item's preamble: (the runs of studies/<stem>.yaml, `extract(runs)`), the item's
    earlier outputs removed; MissingStudy (with the command that makes the runs) when there
    are none, or when `extract` finds nothing in them (`missing` says what it looked for).

    `load(options, stem)`: how the runs are read (default: `options.study`, trial runs)."""
    source = load(options, stem) if load is not None else options.study(stem)
    data = extract(source)
    if len(data) == 0:
        raise MissingStudy(source.study, source.study_file, source.uri, missing)
    remove_outputs(options.out, name)
    return source, data


def legend_above(fig, ax, ncol: int | None = None) -> None:
    """One legend for the whole figure, above the panels (it never covers data)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=ncol or len(labels),
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))


# --- ablation tables -----------------------------------------------------------------------------

JUDGED = (("test_f1", "F1"), ("test_starc", "STARC"))  # the ablation tables' Δ columns


def entry_rows(source, pairs, metrics=tuple(key for key, _ in JUDGED)) -> dict:
    """{(run id, reference run id, metric): (BootstrapComparison, Holm p, verdict)} of the
    prompt × seed bootstrap of run − reference on the same test pairs; Holm per metric across
    `pairs` (the table's comparisons). Runs without test prompt ids: MissingStudy."""
    from fairl.stats import verdicts
    from fairl.study.verdicts import BOOTSTRAP_METRICS, Bootstraps, load_rewards

    rewards, missing = {}, []
    for run in {item.run_id: item for pair in pairs for item in pair}.values():
        rewards[run.run_id] = load_rewards(source.artifact(run, "rewards.npz"))
        if rewards[run.run_id].prompt_ids is None:
            missing.append(run.run_id)
    if missing:
        raise MissingStudy(source.study, source.study_file, source.uri,
                           str(NoPromptIds(sorted(missing))), hint=_rerun(source))
    bootstraps, found = Bootstraps(), {}
    for metric in metrics:
        if metric == "test_starc" and any(rewards[run.run_id].gt_T is None for pair in pairs
                                          for run in pair):
            continue
        comparisons = [bootstraps.contrast(BOOTSTRAP_METRICS[metric],
                                           [(run.run_id, rewards[run.run_id]),
                                            (ref.run_id, rewards[ref.run_id])], [1.0, -1.0])
                       for run, ref in pairs]
        for (run, ref), judged in zip(pairs, verdicts(comparisons)):
            found[(run.run_id, ref.run_id, metric)] = judged
    return found


def comparison(entries, block_name: str, row_name: str, reference_name: str, source):
    """An ablation table: every metric (mean ± std over seeds) per row, and against its reference.

    `entries`: (block, row label, run, reference run or None) in display order. Against the
    reference (same block), for F1 and STARC: Δ with the relative change, its 95 % paired
    prompt × seed bootstrap interval and the verdict, Holm-adjusted per metric across the
    table's rows (`entry_rows`). Returns (columns, formatted rows, DataFrame).
    """
    import pandas as pd

    columns = [block_name, row_name] + [short for _, short, _ in METRICS]
    for _, short in JUDGED:
        columns += [f"Δ {short} vs {reference_name} [95 % CI]", f"{short} verdict (Holm)"]
    pairs = [(run, reference) for _, _, run, reference in entries
             if reference is not None and reference is not run]
    judged = entry_rows(source, pairs) if pairs else {}
    table, records = [], []
    for block, label, run, reference in entries:
        record = {block_name: block, row_name: label, "run_id": run.run_id,
                  "reference_run_id": reference.run_id if reference is not None else ""}
        cells = [block, label]
        for metric, _, _ in METRICS:
            mean = run.metrics.get(metric, math.nan)
            std = run.metrics.get(f"{metric}_std", math.nan)
            low, high = t_interval(run.seed_values(metric).values())
            record.update({f"{metric}_mean": mean, f"{metric}_std": std,
                           f"{metric}_ci_low": low, f"{metric}_ci_high": high})
            cells.append(fmt_mean_std(mean, std))
        for metric, _ in JUDGED:
            row = judged.get((run.run_id, reference.run_id if reference else "", metric))
            cells += _judged_cells(record, metric, row)
        record["n_seeds"] = len(run.seeds)
        table.append(cells)
        records.append(record)
    return columns, table, pd.DataFrame(records)


def _judged_cells(record: dict, metric: str, row) -> list[str]:
    """The Δ [interval] and verdict cells of one metric of an ablation row (– without one)."""
    if row is None:
        return ["–", "–"]
    c = row.comparison
    record.update({f"{metric}_difference": c.difference,
                   f"{metric}_change_percent": relative_change(c.a, c.b),
                   f"{metric}_diff_ci_low": c.ci_low, f"{metric}_diff_ci_high": c.ci_high,
                   f"{metric}_p_holm": row.p_adjusted, f"{metric}_verdict": row.verdict,
                   f"{metric}_mde": c.mde})
    text = (f"{c.difference:+.4f} ({fmt_percent(relative_change(c.a, c.b))}) "
            f"{fmt_interval(c.ci_low, c.ci_high, 4)}")
    return [text.replace("-", "−"), row.verdict]


def _rerun(source) -> str:
    return (f"fairl study run {source.study_file} into a fresh tracking store and --storage (its "
            "runs predate test_prompt_ids in rewards.npz)")


# --- running one item as a script ----------------------------------------------------------------

def script_main(item: str) -> None:
    """`python analysis/<item>.py [fairl report options]` = `fairl report --only <item> ...`.

    The process becomes the fairl CLI (exec), so analysis/ never imports it: the CLI sits
    above analysis in the layers (pyproject.toml, [tool.importlinter]).
    """
    os.execv(sys.executable, [sys.executable, "-m", "fairl", "report", "--only", item,
                              *sys.argv[1:]])
