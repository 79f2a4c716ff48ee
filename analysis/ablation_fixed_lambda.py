"""Ablation: fixed failure-loss weight λ_t = λ_0 against the same λ_0 decayed, table and figure.

Rows: λ_0 × schedule (decayed λ_t = λ_0 e^{-kt}, or fixed); every held-out metric (mean ± std
over seeds), and the fixed schedule against the decayed one at the same λ_0 (Δ F1 and Δ STARC
with the relative change, prompt × seed bootstrap interval and Holm verdict). Figure: F1 and STARC against λ_0, one line per
schedule, 95 % CI bands. Study: ablation_fixed_lambda.
"""

from __future__ import annotations

from analysis.common import (
    METRIC_AXES,
    METRIC_NAMES,
    comparison,
    figure_style,
    legend_above,
    markdown_table,
    method_label,
    objective_label,
    objective_order,
    save_figure,
    script_main,
    selection_note,
    study_data,
    t_interval,
    write_table,
)
from fairl.report import Options, Section
from fairl.runs.read import StudyRuns, TrialRun

NAME = "ablation_fixed_lambda"
STUDY = "ablation_fixed_lambda"
TITLE = "Ablation: fixed vs decayed λ"
PLOTTED = ("test_f1", "test_starc")
SCHEDULE_COLORS = {"decayed": "#dd8452", "fixed": "#8172b3"}


def schedule(run: TrialRun) -> str:
    return "fixed" if run.param("fit.lambda_fixed") else "decayed"


def schedule_label(run: TrialRun) -> str:
    if schedule(run) == "fixed":
        return "fixed λ_t = λ_0"
    return f"decayed λ_t = λ_0 exp(−{float(run.param('fit.lambda_decay')):g} t)"


def schedule_math(run: TrialRun) -> str:
    """schedule_label as matplotlib mathtext."""
    if schedule(run) == "fixed":
        return r"fixed $\lambda_t = \lambda_0$"
    return rf"decayed $\lambda_t = \lambda_0\,e^{{-{float(run.param('fit.lambda_decay')):g}\,t}}$"


def cells(source: StudyRuns) -> dict[tuple[str, float, str], TrialRun]:
    """(objective, λ_0, schedule) -> run (later trials win)."""
    found = {}
    for run in source.runs:
        if "fit.lambda0" in run.params and "fit.lambda_fixed" in run.params:
            found[(run.objective, float(run.param("fit.lambda0")), schedule(run))] = run
    return dict(sorted(found.items(), key=lambda item: (
        objective_order([item[0][0]]), item[0][1], item[0][2] != "decayed")))


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt

    source, found = study_data(options, NAME, STUDY, cells,
                               "no runs with fit.lambda0 and fit.lambda_fixed")
    objectives = objective_order(objective for objective, _, _ in found)
    several = len(objectives) > 1
    entries = []
    for (objective, lambda0, kind), run in found.items():
        reference = found.get((objective, lambda0, "decayed"))
        block = f"{lambda0:g}" + (f", {objective_label(objective)}" if several else "")
        entries.append((block, schedule_label(run), run, reference))
    columns, rows, data = comparison(entries, "λ_0", "schedule", "decayed", source)
    methods = sorted({method_label(run.method) for run in found.values()})
    seeds = max(len(run.seeds) for run in found.values())
    caption = (f"{selection_note(source)} Fixed vs decayed failure-loss weight ({', '.join(methods)}, "
               f"{', '.join(objective_label(o) for o in objectives)}): held-out metrics, mean ± "
               f"std over {seeds} seeds; Δ F1 and Δ STARC of fixed against decayed at the same λ_0: "
               "95 % paired prompt × seed bootstrap interval, verdict Holm-adjusted per metric "
               "across the table's rows.")
    files = write_table(options.out, NAME, columns, rows, caption, data)

    figure_style()
    fig, axes = plt.subplots(len(objectives), len(PLOTTED), squeeze=False,
                             figsize=(5.4 * len(PLOTTED), 3.9 * len(objectives)))
    for objective, axes_row in zip(objectives, axes):
        for metric, ax in zip(PLOTTED, axes_row):
            for kind in ("decayed", "fixed"):
                line = [(lambda0, run) for (obj, lambda0, k), run in found.items()
                        if obj == objective and k == kind and metric in run.metrics]
                if not line:
                    continue
                x = [lambda0 for lambda0, _ in line]
                means = [run.metrics[metric] for _, run in line]
                bands = [t_interval(run.seed_values(metric).values()) for _, run in line]
                color = SCHEDULE_COLORS[kind]
                ax.plot(x, means, marker="o", color=color, lw=1.8,
                        label=schedule_math(line[0][1]))
                ax.fill_between(x, [b[0] for b in bands], [b[1] for b in bands], color=color,
                                alpha=0.2, lw=0)
            ax.set_xscale("log")
            ticks = sorted({lambda0 for obj, lambda0, _ in found if obj == objective})
            ax.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
            ax.minorticks_off()
            ax.set_xlabel(r"initial failure-loss weight $\lambda_0$ (log scale)")
            ax.set_ylabel(METRIC_AXES[metric])
            ax.set_title(METRIC_NAMES[metric] + (f", {objective_label(objective)}"
                                                 if several else ""))
    legend_above(fig, axes[0][0])
    figures = save_figure(fig, options.out, NAME)
    figure_caption = (f"{selection_note(source)} Held-out F1 and STARC (lower is better) against λ_0, fixed vs decayed "
                      f"λ_t; mean over {seeds} seeds, band: 95 % t-interval.")
    used = [(run, f"λ_0 = {lambda0:g}, {kind}, {objective_label(objective)}")
            for (objective, lambda0, kind), run in found.items()]
    used.sort(key=lambda item: item[0].trial)
    return Section(TITLE, [(figures[0], figure_caption)], [(markdown_table(columns, rows), caption)],
                   figures + files, used, [source])


if __name__ == "__main__":
    script_main(NAME)
