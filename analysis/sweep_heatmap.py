"""M_fail × τ_fail sensitivity heatmap of the FA-IRL sweep.

Trials binned on M_fail (linear bins) and τ_fail (log bins) over the searched ranges (from the
study file the launch logged), one row of panels per objective; each cell is the mean over its
trials of the trial's mean-over-seeds held-out F1 (and STARC), with the trial count. Under
max-margin only M_fail acts (τ_fail is unused); under max-entropy only τ_fail. Study: fa_sweep.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.common import (
    METRIC_NAMES,
    best_trial_note,
    figure_style,
    objective_label,
    objective_order,
    save_figure,
    script_main,
    selection_note,
    study_data,
)
from analysis.importances import run_param
from fairl.report import Options, Section
from fairl.runs.read import StudyRuns

NAME = "sweep_heatmap"
STUDY = "fa_sweep"
TITLE = "Sensitivity to M_fail × τ_fail"
PLOTTED = ("test_f1", "test_starc")
BINS = 4
ROWS, COLUMNS = "M_fail", "tau_fail"


def edges(source: StudyRuns, key: str, values: pd.Series) -> tuple[np.ndarray, bool]:
    """BINS + 1 bin edges over the searched range of `key` (log-spaced for a log range)."""
    param = (source.spec.get("search") or {}).get(key)
    log = bool(isinstance(param, dict) and param.get("log"))
    if isinstance(param, dict) and "low" in param:
        low, high = float(param["low"]), float(param["high"])
    else:
        low, high = float(values.min()), float(values.max())
    if log:
        return np.geomspace(low, high, BINS + 1), True
    return np.linspace(low, high, BINS + 1), False


def trial_frame(source: StudyRuns) -> pd.DataFrame:
    rows = []
    for run in source.runs:
        names = (run_param(ROWS), run_param(COLUMNS))
        if not all(name in run.params for name in names):
            continue
        row = {"run_id": run.run_id, "trial": run.trial, "objective": run.objective,
               ROWS: float(run.param(names[0])), COLUMNS: float(run.param(names[1]))}
        row.update({metric: run.metrics.get(metric, math.nan) for metric in PLOTTED})
        rows.append(row)
    return pd.DataFrame(rows)


def label(low: float, high: float, log: bool) -> str:
    digits = 2 if log else 1
    return f"{low:.{digits}f}–{high:.{digits}f}"


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt

    source, trials = study_data(options, NAME, STUDY, trial_frame,
                                f"no runs with searched {ROWS} and {COLUMNS}")
    row_edges, row_log = edges(source, ROWS, trials[ROWS])
    column_edges, column_log = edges(source, COLUMNS, trials[COLUMNS])
    trials["row_bin"] = np.clip(np.searchsorted(row_edges, trials[ROWS], side="right") - 1,
                                0, BINS - 1)
    trials["column_bin"] = np.clip(
        np.searchsorted(column_edges, trials[COLUMNS], side="right") - 1, 0, BINS - 1)
    row_labels = [label(row_edges[i], row_edges[i + 1], row_log) for i in range(BINS)]
    column_labels = [label(column_edges[i], column_edges[i + 1], column_log)
                     for i in range(BINS)]
    objectives = objective_order(trials["objective"])
    metrics = [metric for metric in PLOTTED if trials[metric].notna().any()]

    cells = []
    figure_style()
    fig, axes = plt.subplots(len(objectives), len(metrics), squeeze=False,
                             figsize=(5.8 * len(metrics), 4.4 * len(objectives)))
    for objective, axes_row in zip(objectives, axes):
        part = trials[trials["objective"] == objective]
        for metric, ax in zip(metrics, axes_row):
            cells += draw_heatmap(ax, part, objective, metric, row_labels, column_labels)
    fig.tight_layout()
    files = save_figure(fig, options.out, NAME)
    folder = options.out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{NAME}.csv"
    pd.DataFrame(cells).to_csv(csv, index=False, lineterminator="\n")
    caption = (f"{selection_note(source)} Held-out F1 and STARC of all {len(trials)} sweep trials binned by M_fail and "
               "τ_fail (cell: mean over its trials, n = trials); under max-margin only M_fail "
               "acts, under max-entropy only τ_fail.")
    used_ids = set(trials["run_id"])
    used = [(run, f"sweep trial, {objective_label(run.objective)}") for run in source.runs
            if run.run_id in used_ids]
    return Section(TITLE, [(files[0], caption)], [], files + [csv], used, [source],
                   notes=best_trial_note(source))


def draw_heatmap(ax, part, objective: str, metric: str, row_labels: list[str],
                 column_labels: list[str]) -> list[dict]:
    """One panel: mean `metric` of the trials in each (M_fail, τ_fail) bin; returns the cells."""
    import seaborn as sns

    cells = []
    grid = part.groupby(["row_bin", "column_bin"])[metric].agg(["mean", "count"])
    means = np.full((BINS, BINS), np.nan)
    counts = np.zeros((BINS, BINS), dtype=int)
    for (i, j), values in grid.iterrows():
        means[i, j], counts[i, j] = values["mean"], int(values["count"])
        cells.append({"objective": objective, "metric": metric,
                      f"{ROWS}_bin": row_labels[i], f"{COLUMNS}_bin": column_labels[j],
                      "mean": values["mean"], "trials": int(values["count"])})
    finite = means[np.isfinite(means)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    digits = 3 if spread >= 0.01 or spread == 0 else min(5, 2 - math.floor(math.log10(spread)))
    annotations = np.array([[f"{m:.{digits}f}\nn={c}" if c else "" for m, c in zip(mr, cr)]
                            for mr, cr in zip(means, counts)])
    sns.heatmap(means[::-1], ax=ax, annot=annotations[::-1], fmt="",
                cmap="viridis_r" if metric.endswith("starc") else "viridis",
                xticklabels=column_labels, yticklabels=row_labels[::-1],
                cbar_kws={"label": f"mean {METRIC_NAMES[metric]} (0–1)"
                          + (", lower is better" if metric.endswith("starc") else "")},
                annot_kws={"fontsize": "small"}, linewidths=0.5, linecolor="white")
    ax.set_facecolor("0.93")
    ax.grid(False)
    for i, j in zip(*np.nonzero(counts[::-1] == 0)):  # seaborn leaves NaN cells blank
        ax.text(j + 0.5, i + 0.5, "no trials", ha="center", va="center",
                fontsize="small", color="0.45")
    ax.set_xlabel(r"$\tau_{fail}$ (failure temperature, log bins)")
    ax.set_ylabel(r"$M_{fail}$ (failure margin, reward units)")
    ax.set_title(f"{METRIC_NAMES[metric]}, {objective_label(objective)}")
    ax.tick_params(axis="x", rotation=0)
    ax.tick_params(axis="y", rotation=0)
    return cells

if __name__ == "__main__":
    script_main(NAME)
