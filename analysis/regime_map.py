"""The regime map: STARC(FA-IRL) − STARC(standard IRL) over β × T→NT fraction, per n and objective.

`map_section` draws any such map (analysis.misspecification: rows = the misspecification m).
Every cell is one row of fairl.study.verdicts.study_rows (the launch's verdicts: prompt ×
seed bootstrap of test STARC(FA) − STARC(std) on the same test pairs, Holm-adjusted over the
whole map): colour = the difference (blue: FA-IRL lower STARC, better), text = the difference,
the relative change and the verdict (better / worse / no detectable difference, "n.d.").
Study: regime_map (rows: world.options.beta when searched; columns: the T→NT fraction).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from analysis.common import (
    bootstrap_rows,
    figure_style,
    fmt,
    fmt_interval,
    fmt_p,
    markdown_table,
    method_label,
    objective_label,
    relative_change,
    save_figure,
    script_main,
    selection_note,
    study_data,
    write_table,
)
from fairl.report import Options, Section

NAME = "regime_map"
STUDY = "regime_map"
TITLE = "Regime map: where FA-IRL changes STARC"
ROW, COLUMN = "beta", "tnt_fraction"
SHORT = {"better": "better", "worse": "worse", "no detectable difference": "n.d."}


def cells(source) -> pd.DataFrame:
    """One row per (context, label) of the study's STARC verdicts."""
    rows = []
    for (context_json, label, metric), row in bootstrap_rows(source).items():
        if metric != "test_starc":
            continue
        context = json.loads(context_json)
        c = row.comparison
        rows.append({**context, "label": label, "starc_fa": c.a, "starc_std": c.b,
                     "difference": c.difference, "relative_percent": relative_change(c.a, c.b),
                     "ci_low": c.ci_low, "ci_high": c.ci_high, "p_holm": row.p_holm,
                     "mde": c.mde, "verdict": row.verdict, "run_id": row.run_id,
                     "reference_run_id": row.reference_run_id})
    return pd.DataFrame(rows)


def _panel_keys(data: pd.DataFrame, row: str = ROW) -> list[str]:
    fixed = {row, COLUMN, "label", "starc_fa", "starc_std", "difference", "relative_percent",
             "ci_low", "ci_high", "p_holm", "mde", "verdict", "run_id", "reference_run_id"}
    return [key for key in data.columns if key not in fixed]


def build(options: Options) -> Section:
    return map_section(options, STUDY, NAME, TITLE, ROW, "β (alignment strength⁻¹)", "β")


def map_section(options: Options, study: str, name: str, title: str, row: str, row_label: str,
                row_short: str, row_ticks=None, notes: str = "") -> Section:
    """The map of a study's STARC verdicts: rows = context key `row`, columns = the T→NT
    fraction, one panel per value of every other context key; `row_ticks(source)`: {row
    value: tick label}; `notes`: Markdown after the table."""
    import matplotlib.pyplot as plt

    source, data = study_data(options, name, study, cells,
                              "no FA-IRL vs standard IRL STARC verdicts")
    if row not in data:
        data[row] = math.nan
    if COLUMN not in data:
        data[COLUMN] = math.nan
    keys = _panel_keys(data, row)
    ticks = row_ticks(source) if row_ticks else {}
    panels = list(data.groupby(keys).groups) if keys else [()]
    panels = sorted((panel if isinstance(panel, tuple) else (panel,) for panel in panels),
                    key=lambda panel: [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
                                       for v in panel])
    row_values = sorted(data[row].dropna().unique()) or [math.nan]
    column_values = sorted(data[COLUMN].dropna().unique()) or [math.nan]
    limit = float(np.nanmax(np.abs(data["difference"]))) or 1e-3
    figure_style()
    width = min(4, len(panels))
    height = math.ceil(len(panels) / width)
    fig, axes = plt.subplots(height, width, squeeze=False,
                             figsize=(1.6 + 1.7 * len(column_values) * width,
                                      0.9 + 1.2 * len(row_values) * height))
    image = None
    for index, panel in enumerate(panels):
        ax = axes[index // width][index % width]
        part = data
        for key, value in zip(keys, panel):
            part = part[part[key] == value]
        grid = np.full((len(row_values), len(column_values)), np.nan)
        for i, r in enumerate(row_values):
            for j, col in enumerate(column_values):
                hit = part[((part[row] == r) | (part[row].isna() & math.isnan(r)))
                           & ((part[COLUMN] == col) | (part[COLUMN].isna() & math.isnan(col)))]
                if hit.empty:
                    continue
                cell = hit.iloc[-1]
                grid[i, j] = cell["difference"]
                ax.text(j, i, f"{cell['difference']:+.3f}\n{cell['relative_percent']:+.0f} %\n"
                        f"{SHORT[cell['verdict']]}", ha="center", va="center", fontsize=8,
                        color="white" if abs(cell["difference"]) > 0.6 * limit else "black",
                        fontweight="bold" if cell["verdict"] != "no detectable difference"
                        else "normal")
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                          origin="lower")
        ax.set_xticks(range(len(column_values)), [f"{v:g}" for v in column_values])
        first = index % width == 0  # row labels (long with ticks) on the left panels only
        ax.set_yticks(range(len(row_values)), [ticks.get(v, f"{v:g}") if first else ""
                                               for v in row_values])
        if first:
            ax.set_ylabel(row_label)
        ax.grid(False)
        panel_title = ", ".join(objective_label(str(v)) if k == "objective" else f"{k}={v}"
                                for k, v in zip(keys, panel))
        ax.set_title(panel_title or "all", fontsize=10)
    for index in range(len(panels), height * width):
        axes[index // width][index % width].axis("off")
    fig.supxlabel("T→NT fraction of the training pairs", fontsize=11)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
                 label="STARC(FA-IRL) − STARC(standard IRL)  (< 0: FA-IRL better)")
    files = save_figure(fig, options.out, name)

    ordered = data.sort_values(keys + [row, COLUMN])
    columns = [*keys, row_short, "T→NT", "STARC std", "STARC FA", "FA − std [95 % CI]", "relative",
               "Holm p", "verdict"]
    rows = [[*(objective_label(str(r[k])) if k == "objective" else str(r[k]) for k in keys),
             fmt(r[row], 2), fmt(r[COLUMN], 2), fmt(r["starc_std"]), fmt(r["starc_fa"]),
             f"{r['difference']:+.4f} {fmt_interval(r['ci_low'], r['ci_high'], 4)}",
             f"{r['relative_percent']:+.1f} %", fmt_p(r["p_holm"]), r["verdict"]]
            for _, r in ordered.iterrows()]
    counts = ordered["verdict"].value_counts().to_dict()
    summary = ", ".join(f"{counts.get(word, 0)} {word}" for word in SHORT)
    caption = (f"{selection_note(source)} FA-IRL vs standard IRL "
               "test STARC per cell; 95 % prompt × seed bootstrap interval, Holm over all "
               f"{len(ordered)} cells: {summary}.")
    table = write_table(options.out, name, columns, rows, caption, ordered)
    used_ids = set(data["run_id"]) | set(data["reference_run_id"])
    used = [(run, f"{method_label(run.method)}, {objective_label(run.objective)}")
            for run in source.runs if run.run_id in used_ids]
    figure_caption = ("STARC(FA-IRL) − STARC(standard IRL) on the test pairs per cell (blue: "
                      "FA-IRL closer to r*); text: difference, relative change, verdict "
                      "(n.d.: no detectable difference at Holm-adjusted 5 %).")
    return Section(title, [(files[0], figure_caption)], [(markdown_table(columns, rows), caption)],
                   files + table, used, [source], notes=notes)


if __name__ == "__main__":
    script_main(NAME)
