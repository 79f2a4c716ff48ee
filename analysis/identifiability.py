"""Consistency: held-out STARC against the training-set size n, standard IRL and FA-IRL.

One line per (method, β) and one panel per objective; points are means over seeds with 95 %
t-intervals. The table also gives, per (objective, method, β), the prompt × seed bootstrap
(fairl.stats.paired_bootstrap via fairl.study.verdicts.compare, the same test pairs) of
STARC(largest n) − STARC(smallest n): the acceptance check that STARC falls with n.
Study: identifiability (the SIR world; any world with a searched world.compose.n works).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.common import (
    COLORS,
    figure_style,
    fmt,
    fmt_interval,
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
from fairl.runs.read import StudyRuns
from fairl.stats import STARC
from fairl.study.verdicts import compare, load_rewards

NAME = "identifiability"
STUDY = "identifiability"
TITLE = "Consistency: STARC against n"
N, BETA = "world.compose.n", "world.options.beta"
METHODS = ("standard_irl", "fa_irl")


def points(source: StudyRuns) -> pd.DataFrame:
    """One row per (objective, method, β, n): test STARC mean over seeds and its t-interval."""
    rows = []
    for run in source.runs:
        if N not in run.params or run.method not in METHODS or "test_starc" not in run.metrics:
            continue
        values = run.seed_values("test_starc")
        low, high = t_interval(values.values())
        rows.append({"objective": run.objective, "method": run.method,
                     "beta": float(run.param(BETA)) if BETA in run.params else math.nan,
                     "n": int(run.param(N)), "test_starc": run.metrics["test_starc"],
                     "ci_low": low, "ci_high": high, "n_seeds": len(values),
                     "run_id": run.run_id})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # later trials win, as in every item
    return frame.drop_duplicates(["objective", "method", "beta", "n"], keep="last")


def trend(source: StudyRuns, data: pd.DataFrame) -> pd.DataFrame:
    """Per (objective, method, β): bootstrap of STARC(largest n) − STARC(smallest n)."""
    runs = {run.run_id: run for run in source.runs}
    rows = []
    for (objective, method, beta), part in data.groupby(["objective", "method", "beta"],
                                                        dropna=False):
        part = part.sort_values("n")
        small, large = part.iloc[0], part.iloc[-1]
        if small["n"] == large["n"]:
            continue
        a = load_rewards(source.artifact(runs[large["run_id"]], "rewards.npz"))
        b = load_rewards(source.artifact(runs[small["run_id"]], "rewards.npz"))
        c = compare(STARC, a, b)
        rows.append({"objective": objective, "method": method, "beta": beta,
                     "n_small": int(small["n"]), "n_large": int(large["n"]),
                     "starc_small": c.b, "starc_large": c.a, "difference": c.difference,
                     "ci_low": c.ci_low, "ci_high": c.ci_high, "p_value": c.p_value,
                     "falls": bool(c.ci_high < 0)})
    return pd.DataFrame(rows)


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt

    source, data = study_data(options, NAME, STUDY, points,
                              f"no standard IRL / FA-IRL runs with a {N} parameter")
    trends = trend(source, data)
    figure_style()
    objectives = objective_order(data["objective"])
    betas = sorted(data["beta"].unique())
    fig, axes = plt.subplots(1, len(objectives), squeeze=False,
                             figsize=(5.4 * len(objectives), 4.0))
    styles = ["-", "--", ":", "-."]
    for objective, ax in zip(objectives, axes[0]):
        for method in METHODS:
            for index, beta in enumerate(betas):
                line = data[(data["objective"] == objective) & (data["method"] == method)
                            & ((data["beta"] == beta) | (data["beta"].isna() & math.isnan(beta)))
                            ].sort_values("n")
                if line.empty:
                    continue
                label = method_label(method)
                name = label if math.isnan(beta) else f"{label}, β={beta:g}"
                ax.errorbar(line["n"], line["test_starc"],
                            yerr=[line["test_starc"] - line["ci_low"],
                                  line["ci_high"] - line["test_starc"]],
                            color=COLORS[label], ls=styles[index % len(styles)], marker="o",
                            ms=4, capsize=2, lw=1.5, label=name)
        ax.axhline(0.2, color="0.4", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("training pairs n (log scale)")
        ax.set_ylabel("test STARC to r* (0–1, lower better)")
        ax.set_title(objective_label(objective))
    legend_above(fig, axes[0][-1], ncol=min(6, 2 * len(betas)))
    files = save_figure(fig, options.out, NAME)

    columns = ["objective", "method", "β", "n: small → large", "STARC small", "STARC large",
               "large − small [95 % CI]", "falls with n"]
    rows = [[objective_label(r.objective), method_label(r.method), fmt(r.beta, 2),
             f"{r.n_small} → {r.n_large}", fmt(r.starc_small), fmt(r.starc_large),
             f"{r.difference:+.3f} {fmt_interval(r.ci_low, r.ci_high)}",
             "yes" if r.falls else "no"] for r in trends.itertuples()]
    caption = ("Test STARC at the smallest and largest n per objective, method and β; "
               "difference with its 95 % prompt × seed bootstrap interval (same test pairs); "
               "'falls': the interval lies below 0.")
    table = write_table(options.out, NAME, columns, rows, caption, trends)
    folder = options.out / "tables"
    points_csv = folder / f"{NAME}_points.csv"
    data.to_csv(points_csv, index=False, lineterminator="\n")
    seeds = int(data["n_seeds"].max())
    figure_caption = (f"{selection_note(source)} Held-out STARC against the number of "
                      f"training pairs, mean over {seeds} seeds with 95 % t-intervals; dotted "
                      "line: 0.2.")
    used_ids = set(data["run_id"])
    used = [(run, (f"{method_label(run.method)}, n={run.param(N)}, "
                   f"{objective_label(run.objective)}")) for run in source.runs
            if run.run_id in used_ids]
    return Section(TITLE, [(files[0], figure_caption)],
                   [(markdown_table(columns, rows), caption)], files + table + [points_csv],
                   used, [source])


if __name__ == "__main__":
    script_main(NAME)
