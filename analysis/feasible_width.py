"""Theorem 1, measured: how much failure constraints shrink the feasible set of linear rewards.

Unlike the other items this one reads no study: it solves linear programs (fairl.feasible,
HiGHS; deterministic, seconds) on a noise-free planted world, where every pair is ordered by
θ* (separable) and h is low-dimensional, so the set is a polytope small enough to measure.
F = {θ : ‖θ‖∞ <= 1, Δ_i(θ) >= M ∀i}; F_FA adds Δ_i(θ) >= M_fail on the failure pairs, the
m pairs with the lowest margins under the Chebyshev centre of F (the reward a fit inside F
would be least sure about). Widths along DIRECTIONS random unit directions (default_rng(SEED)).
Panels: the width distribution of F and F_FA at the default (M_fail, m); the median width
ratio |F_FA|/|F| against M_fail (fixed m) and against m (fixed M_fail).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from analysis.common import (
    COLORS,
    figure_style,
    fmt,
    markdown_table,
    remove_outputs,
    save_figure,
    script_main,
    write_table,
)
from fairl.data.planted import PlantedConfig, make_planted
from fairl.feasible import chebyshev_centre, max_margin, random_directions, widths
from fairl.report import Options, Section

NAME = "feasible_width"
STUDY = None  # reads no study: the LPs run here
TITLE = "Theorem 1: feasible-set width, standard vs failure-aware"
WORLD = PlantedConfig(n_train=200, n_test=2, n_val=2, d=6, label_noise=0.0, seed=0)
DIRECTIONS, SEED = 60, 0
MARGIN_SHARE = 0.25  # M = share × the largest feasible margin
M_FAIL_FACTORS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)  # M_fail = factor × M
FAILURE_COUNTS = (1, 2, 5, 10, 20, 50)
DEFAULT_FACTOR, DEFAULT_COUNT = 2.0, 10


@functools.cache  # deterministic and slow (~15 s of LPs): the claims ledger reads it too
def measure() -> tuple[pd.DataFrame, dict]:
    """Per (setting, direction): widths of F and F_FA; and the world's constants (do not
    modify them: they are shared)."""
    world = make_planted(WORLD)
    diffs = (world.train.h_T - world.train.h_NT).astype(np.float64)
    margin = MARGIN_SHARE * max_margin(diffs)
    centre = chebyshev_centre(diffs, margin)
    order = np.argsort(diffs @ centre.theta, kind="stable")  # lowest margins first
    directions = random_directions(diffs.shape[1], DIRECTIONS, np.random.default_rng(SEED))
    standard = widths(diffs, directions, margin)
    settings = {(DEFAULT_FACTOR, m) for m in FAILURE_COUNTS}
    settings |= {(f, DEFAULT_COUNT) for f in M_FAIL_FACTORS}
    rows = []
    for factor, count in sorted(settings):
        mask = np.zeros(len(diffs), bool)
        mask[order[:count]] = True
        aware = widths(diffs, directions, margin, mask, factor * margin)
        for index, (w_std, w_fa) in enumerate(zip(standard, aware)):
            rows.append({"m_fail_factor": factor, "failure_pairs": count, "direction": index,
                         "width_standard": w_std, "width_failure_aware": w_fa,
                         "ratio": w_fa / w_std})
    constants = {"pairs": len(diffs), "d": diffs.shape[1], "M": margin,
                 "max_margin": margin / MARGIN_SHARE, "centre_radius": centre.radius}
    return pd.DataFrame(rows), constants


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt

    data, constants = measure()
    remove_outputs(options.out, NAME)
    figure_style()
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.0))
    default = data[(data["m_fail_factor"] == DEFAULT_FACTOR)
                   & (data["failure_pairs"] == DEFAULT_COUNT)]
    bins = np.linspace(0, float(default["width_standard"].max()) * 1.05, 25)
    axes[0].hist(default["width_standard"], bins=bins, alpha=0.6, color=COLORS["standard IRL"],
                 label="F (all pairs Δ ≥ M)")
    axes[0].hist(default["width_failure_aware"].dropna(), bins=bins, alpha=0.6,
                 color=COLORS["FA-IRL"], label=f"F_FA ({DEFAULT_COUNT} failures Δ ≥ "
                 f"{DEFAULT_FACTOR:g}M)")
    axes[0].set_xlabel("width along a random unit direction")
    axes[0].set_ylabel("directions")
    axes[0].legend(fontsize="small")
    axes[0].set_title("width distribution")
    summary = []
    for ax, key, fixed_key, fixed, label in (
            (axes[1], "m_fail_factor", "failure_pairs", DEFAULT_COUNT, "M_fail / M"),
            (axes[2], "failure_pairs", "m_fail_factor", DEFAULT_FACTOR, "failure pairs m")):
        part = data[data[fixed_key] == fixed]
        grouped = part.groupby(key)["ratio"]
        median = grouped.median()
        q25, q75 = grouped.quantile(0.25), grouped.quantile(0.75)
        feasible = part.groupby(key)["width_failure_aware"].apply(lambda w: w.notna().mean())
        ax.plot(median.index, median.values, marker="o", color=COLORS["FA-IRL"], label="median")
        ax.fill_between(median.index, q25.values, q75.values, color=COLORS["FA-IRL"], alpha=0.2,
                        lw=0, label="quartiles")
        ax.axhline(1.0, color="0.4", lw=0.8, ls=":")
        ax.set_xlabel(label)
        ax.set_ylabel("width ratio |F_FA| / |F|")
        ax.set_ylim(0, 1.05)
        fixed_text = (f"M_fail = {fixed:g}M" if fixed_key == "m_fail_factor"
                      else f"{fixed:g} failure pairs")
        ax.set_title(f"against {label} ({fixed_text})")
        if key == "failure_pairs":
            ax.set_xscale("log")
        ax.legend(fontsize="small")
        for value in median.index:
            summary.append({"vary": key, "value": value, fixed_key: fixed,
                            "median_ratio": median[value], "q25": q25[value], "q75": q75[value],
                            "feasible_share": feasible[value]})
    fig.tight_layout()
    files = save_figure(fig, options.out, NAME)
    table_data = pd.DataFrame(summary)
    columns = ["varied", "value", "median |F_FA|/|F|", "quartiles", "F_FA non-empty"]
    rows = [[r.vary.replace("_", " "), f"{r.value:g}", fmt(r.median_ratio),
             f"[{fmt(r.q25)}, {fmt(r.q75)}]", f"{r.feasible_share:.0%}"]
            for r in table_data.itertuples()]
    world = (f"planted world, {constants['pairs']} noise-free pairs, d = {constants['d']}, "
             f"M = {constants['M']:.3f} ({MARGIN_SHARE:g} × the largest feasible margin "
             f"{constants['max_margin']:.3f}), {DIRECTIONS} directions")
    caption = (f"Median width ratio of the failure-aware set to the standard one ({world}); "
               "failure pairs: lowest margins under F's Chebyshev centre.")
    table = write_table(options.out, NAME, columns, rows, caption, table_data)
    raw = options.out / "tables" / f"{NAME}_widths.csv"
    data.to_csv(raw, index=False, lineterminator="\n")
    figure_caption = (f"Computed here by linear programming (no study; {world}). Left: widths "
                      "of F and F_FA along random unit directions; middle, right: median (band: "
                      "quartiles) of the per-direction ratio |F_FA|/|F| against M_fail and "
                      "against the number of failure pairs.")
    return Section(TITLE, [(files[0], figure_caption)], [(markdown_table(columns, rows), caption)],
                   files + table + [raw], [], [],
                   notes="Theorem 1 of the paper says F_FA ⊊ F; every ratio here is <= 1 by "
                         "construction, the figure shows by how much.")


if __name__ == "__main__":
    script_main(NAME)
