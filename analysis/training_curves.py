"""Training curves of one FA-IRL run: loss terms, |F_t| and |S_t|, γ_t, λ_t, p_t per round.

From the run's history.csv (every seed, every round): the mean over seeds with the min–max
range as a band; the standard IRL run of the same objective (same study) is drawn dashed
where it has the quantity. Study: main_table (FA-IRL, max-margin), or any run by `--run`.
"""

from __future__ import annotations

import pandas as pd

from analysis.common import (
    COLORS,
    figure_style,
    method_label,
    objective_label,
    remove_outputs,
    save_figure,
    script_main,
)
from fairl.report import Options, Section
from fairl.runs.read import MissingStudy, StudyRuns, TrialRun, load_run

NAME = "training_curves"
STUDY = "main_table"
TITLE = "Training curves"

# (history columns, panel title, y label); several columns share a panel.
PANELS = (
    (("loss_base", "loss_fail", "loss_l2"), "loss terms", "loss (log scale)"),
    (("n_failures", "n_sampled"), r"failures $|F_t|$ and sample $|S_t|$", "training pairs"),
    (("gamma",), r"failure threshold $\gamma_t$", r"$\gamma_t$ (reward margin units)"),
    (("lam",), r"failure-loss weight $\lambda_t$", r"$\lambda_t$ (loss weight)"),
    (("p",), r"failure sampling rate $p_t$", r"$p_t$ (% of $F_t$ sampled)"),
    (("train_pairwise_accuracy",), "training pairs ordered", r"pairs with $\Delta > 0$ (%)"),
)
LABELS = {"loss_base": r"base loss $L_{base}$", "loss_fail": r"failure loss $L_{fail}(S_t)$",
          "loss_l2": r"L2 penalty $\alpha\|\theta_F\|^2$", "n_failures": r"$|F_t|$ failures",
          "n_sampled": r"$|S_t|$ sampled", "train_pairwise_accuracy": "FA-IRL"}
# FA-IRL's own quantities; blue is kept for standard IRL (dashed).
LINE_COLORS = {"loss_base": COLORS["FA-IRL"], "loss_fail": "#c44e52", "loss_l2": "#55a868",
               "n_failures": COLORS["FA-IRL"], "n_sampled": "#8172b3"}
PERCENT = {"p", "train_pairwise_accuracy"}


def chosen_runs(options: Options) -> tuple[StudyRuns, TrialRun, TrialRun | None]:
    """(source, the run to draw, the standard IRL run of the same objective or None)."""
    if options.run:
        source = load_run(options.uri, options.run)
        return source, source.runs[0], None
    source = options.study(STUDY)
    cells = source.by_method_objective()
    fa = cells.get(("fa_irl", "max_margin")) or next(
        (run for (method, _), run in sorted(cells.items()) if method == "fa_irl"), None)
    if fa is None:
        raise MissingStudy(source.study, source.study_file, source.uri,
                           f"study {source.study!r} has no FA-IRL run")
    return source, fa, cells.get(("standard_irl", fa.objective))


def history(source: StudyRuns, run: TrialRun) -> pd.DataFrame:
    return pd.read_csv(source.artifact(run, "history.csv"))


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt

    source, run, reference = chosen_runs(options)
    frame = history(source, run)
    base = history(source, reference) if reference is not None else None
    remove_outputs(options.out, NAME)
    figure_style()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for ax, (columns, title, ylabel) in zip(axes.flat, PANELS):
        for column in columns:
            if column not in frame:
                continue
            scale = 100.0 if column in PERCENT else 1.0
            stats = frame.groupby("round")[column].agg(["mean", "min", "max"]) * scale
            if column.startswith("loss"):
                stats = stats.where(stats["mean"] > 0)  # log scale: rounds without the term
            color = LINE_COLORS.get(column, COLORS["FA-IRL"])
            label = LABELS[column] if len(columns) > 1 or column == "train_pairwise_accuracy" \
                else None
            ax.plot(stats.index, stats["mean"], color=color, label=label, lw=1.8)
            ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2,
                            lw=0)
        if base is not None and columns[0] in ("loss_base", "train_pairwise_accuracy"):
            scale = 100.0 if columns[0] in PERCENT else 1.0
            curve = base.groupby("round")[columns[0]].mean() * scale
            ax.plot(curve.index, curve.values, color=COLORS["standard IRL"], ls="--", lw=1.6,
                    label="standard IRL" + (" base loss" if columns[0] == "loss_base" else ""))
        if columns[0].startswith("loss"):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("round (full pass over the training pairs)")
    seeds = frame["seed"].nunique()
    what = f"{run_label(run)}, study {source.study}, run {run.run_id[:8]}"
    fig.suptitle(f"Training curves: {what} (mean over {seeds} seeds, band = min–max)",
                 fontsize="medium")
    fig.tight_layout()
    files = save_figure(fig, options.out, NAME)
    caption = (f"Per-round training curves of {what}: loss terms, failures |F_t| and sampled "
               f"|S_t|, threshold γ_t, weight λ_t, sampling rate p_t and ordered training "
               f"pairs; mean over {seeds} seeds (band: min–max)"
               + ("; dashed: standard IRL, same objective." if reference is not None else "."))
    used = [(run, run_label(run))] + ([(reference, run_label(reference))] if reference else [])
    return Section(TITLE, [(files[0], caption)], [], files, used, [source])


def run_label(run: TrialRun) -> str:
    return f"{method_label(run.method)} ({objective_label(run.objective)})"


if __name__ == "__main__":
    script_main(NAME)
