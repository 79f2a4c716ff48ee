"""Ablation: where failures come from (r*, the margin criterion, an ensemble, none), table and figure.

The table is the variant table of ablation_no_rf (every metric; Δ F1 / Δ STARC against
standard IRL with the prompt × seed bootstrap and Holm verdicts). The figure: held-out F1 and STARC per failure source, large dots = mean
over seeds, whiskers = 95 % t-interval, small dots = single seeds, one colour per objective.
Study: ablation_failure_source.
"""

from __future__ import annotations

import numpy as np

from analysis.ablation_no_rf import variant_entries, variant_table
from analysis.common import (
    METRIC_AXES,
    METRIC_NAMES,
    figure_style,
    legend_above,
    method_label,
    objective_label,
    save_figure,
    script_main,
    selection_note,
    t_interval,
)
from fairl.report import Options, Section

NAME = "ablation_failure_source"
STUDY = "ablation_failure_source"
TITLE = "Ablation: failure source"
PLOTTED = ("test_f1", "test_starc")
OBJECTIVE_COLORS = ("#4c72b0", "#dd8452", "#55a868")


def build(options: Options) -> Section:
    import textwrap

    import matplotlib.pyplot as plt

    section = variant_table(options, NAME, STUDY, TITLE, "Failure source ablation")
    source = section.sources[0]
    entries = variant_entries(source)
    objectives = list(dict.fromkeys(objective for objective, _, _, _ in entries))
    variants = list(dict.fromkeys(variant for _, variant, _, _ in entries))
    figure_style()
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(6.2 * len(PLOTTED), 4.4))
    width = 0.8 / len(objectives)
    for metric, ax in zip(PLOTTED, np.atleast_1d(axes)):
        for k, objective in enumerate(objectives):
            color = OBJECTIVE_COLORS[k % len(OBJECTIVE_COLORS)]
            for i, variant in enumerate(variants):
                run = next((run for obj, var, run, _ in entries
                            if obj == objective and var == variant), None)
                if run is None or metric not in run.metrics:
                    continue
                x = i - 0.4 + width * (k + 0.5)
                values = list(run.seed_values(metric).values())
                low, high = t_interval(values)
                mean = run.metrics[metric]
                jitter = np.linspace(-width * 0.3, width * 0.3, len(values))
                ax.scatter(x + jitter, values, s=12, color=color, alpha=0.45, lw=0)
                error = [[mean - low], [high - mean]] if np.isfinite(low) else None
                ax.errorbar(x, mean, yerr=error, fmt="o", markersize=8, color=color, capsize=4,
                            lw=1.6, label=objective_label(objective) if i == 0 else None)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels([textwrap.fill(method_label(variant), 18) for variant in variants])
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_ylabel(METRIC_AXES[metric])
        ax.set_title(METRIC_NAMES[metric])
    legend_above(fig, np.atleast_1d(axes)[0])
    files = save_figure(fig, options.out, NAME)
    seeds = max(len(run.seeds) for _, _, run, _ in entries)
    caption = (f"{selection_note(section.sources[0])} Held-out F1 and STARC (lower is better) by failure source: r* disagreement, "
               "the margin criterion, none (failure head kept), and standard IRL; large dots: mean "
               f"over {seeds} seeds, whiskers: 95 % t-interval, small dots: single seeds.")
    return Section(TITLE, [(files[0], caption)], section.tables, files + section.files,
                   section.runs, section.sources)


if __name__ == "__main__":
    script_main(NAME)
