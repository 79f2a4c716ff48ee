"""Metrics vs the T→NT fraction of the training set, standard IRL and FA-IRL, 95 % CI bands.

One run per (method, fraction); each point is the mean over seeds, the band its 95 %
t-interval. Also writes the plotted numbers with the paired FA-IRL − standard IRL
difference and its p-value per fraction (tables/tnt_fraction.csv). STARC panels also show
the reference lines of the launch run (fairl.study.references: the linear oracle and standard
IRL on Bradley–Terry(r*) labels, both fitted on the full training split). Study: tnt_fraction.
"""

from __future__ import annotations

import pandas as pd

from analysis.common import (
    COLORS,
    METRIC_AXES,
    METRIC_NAMES,
    figure_style,
    legend_above,
    method_label,
    objective_label,
    objective_order,
    paired_tests,
    save_figure,
    script_main,
    selection_note,
    study_data,
    t_interval,
)
from fairl.report import Options, Section
from fairl.runs.read import StudyRuns

NAME = "tnt_fraction"
STUDY = "tnt_fraction"
TITLE = "Metrics vs the T→NT fraction"
PLOTTED = ("test_f1", "test_roc_auc", "test_starc")
FRACTION = "world.compose.tnt_fraction"


def points(source: StudyRuns) -> pd.DataFrame:
    """One row per (objective, method, fraction, metric): mean, std, CI, paired test vs std."""
    latest = {}
    for run in source.runs:  # later trials win
        if FRACTION in run.params and run.method in ("standard_irl", "fa_irl"):
            latest[(run.objective, run.method, float(run.param(FRACTION)))] = run
    rows = []
    for (objective, method, fraction), run in sorted(latest.items()):
        reference = latest.get((objective, "standard_irl", fraction))
        for metric in PLOTTED:
            if metric not in run.metrics:
                continue
            values = run.seed_values(metric)
            low, high = t_interval(values.values())
            p_t = n = float("nan")
            if method == "fa_irl" and reference is not None:
                p_t, _, n = paired_tests(values, reference.seed_values(metric))
            rows.append({"objective": objective, "method": method, "tnt_fraction": fraction,
                         "metric": metric, "mean": run.metrics[metric],
                         "std": run.metrics.get(f"{metric}_std", float("nan")),
                         "ci_low": low, "ci_high": high, "n_seeds": len(values),
                         "p_paired_t_vs_standard": p_t, "n_paired_seeds": n,
                         "run_id": run.run_id})
    return pd.DataFrame(rows)


def reference_lines(ax, metrics: dict[str, float], objective: str) -> None:
    """The launch run's room-to-improve references as horizontal lines (when logged)."""
    oracle = metrics.get("reference_oracle_test_starc")
    bt = metrics.get(f"reference_bt_irl_{objective}_test_starc",
                     metrics.get("reference_bt_irl_test_starc"))
    if oracle is not None:
        ax.axhline(oracle, color="0.3", ls="--", lw=1.2, label="linear oracle")
    if bt is not None:
        ax.axhline(bt, color="0.5", ls=":", lw=1.4, label="IRL on BT(r*) labels")


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt

    source, data = study_data(options, NAME, STUDY, points,
                              f"no standard IRL / FA-IRL runs with a {FRACTION} parameter")
    folder = options.out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{NAME}.csv"
    data.to_csv(csv, index=False, lineterminator="\n")
    figure_style()
    objectives = objective_order(data["objective"])
    metrics = [metric for metric in PLOTTED if metric in set(data["metric"])]
    fig, axes = plt.subplots(len(objectives), len(metrics), squeeze=False,
                             figsize=(4.6 * len(metrics), 3.6 * len(objectives)))
    for objective, axes_row in zip(objectives, axes):
        for metric, ax in zip(metrics, axes_row):
            for method in ("standard_irl", "fa_irl"):
                line = data[(data["objective"] == objective) & (data["method"] == method)
                            & (data["metric"] == metric)].sort_values("tnt_fraction")
                if line.empty:
                    continue
                label = method_label(method)
                x = line["tnt_fraction"] * 100
                ax.plot(x, line["mean"], marker="o", color=COLORS[label], label=label, lw=1.8)
                ax.fill_between(x, line["ci_low"], line["ci_high"], color=COLORS[label],
                                alpha=0.2, lw=0)
            if metric == "test_starc":
                reference_lines(ax, source.launch_metrics, objective)
            ax.set_xlabel("T→NT pairs in the training set (%)")
            ax.set_ylabel(METRIC_AXES[metric])
            title = METRIC_NAMES[metric]
            ax.set_title(title if len(objectives) == 1 else
                         f"{title}, {objective_label(objective)}")
    legend_above(fig, axes[0][-1])  # the STARC panel: it also has the reference lines
    files = save_figure(fig, options.out, NAME)
    seeds = int(data["n_seeds"].max())
    caption = (f"{selection_note(source)} Held-out F1, ROC-AUC and STARC (lower is better) "
               "against the share of T→NT pairs among the training pairs, standard IRL vs "
               f"FA-IRL; mean over {seeds} seeds, band: 95 % t-interval over seeds; dashed: "
               "linear oracle STARC, dotted: standard IRL on Bradley–Terry(r*) labels (both "
               "on the full training split).")
    used_ids = set(data["run_id"])
    used = [(run, (f"{method_label(run.method)}, T→NT {float(run.param(FRACTION)):.0%}, "
             f"{objective_label(run.objective)}")) for run in source.runs if run.run_id in used_ids]
    return Section(TITLE, [(files[0], caption)], [], files + [csv], used, [source])


if __name__ == "__main__":
    script_main(NAME)
