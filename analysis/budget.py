"""Optimisation speed or solution: FA-IRL − standard IRL at 25, 100 and 400 rounds, per world.

Studies budget (the embedded world) and budget_sir (the SIR world at misspecification m = 0
and 1), FA-IRL's schedules stretched over each budget. Every cell is a row of the study's
launch verdicts (fairl.study.verdicts: prompt × seed bootstrap of test STARC(FA) − STARC(std),
Holm over the study's cells). Figure, one column per world: top, test STARC of both methods
against the rounds (95 % t-intervals over seeds); bottom, the difference with its bootstrap
interval, filled markers where Holm finds it. Notes: per world and objective, whether an effect is one of
speed (gone by the largest budget) or of the solution (still there at it).
"""

from __future__ import annotations

import json

import pandas as pd

from analysis.common import (
    bootstrap_rows,
    figure_style,
    fmt,
    fmt_interval,
    fmt_p,
    legend_above,
    markdown_table,
    method_label,
    objective_label,
    objective_order,
    relative_change,
    remove_outputs,
    save_figure,
    script_main,
    selection_note,
    t_interval,
    world_of,
    write_table,
)
from fairl.report import Options, Section
from fairl.runs.read import MissingStudy

NAME = "budget"
STUDY = "budget"  # and STUDIES[1:]
STUDIES = ("budget", "budget_sir")
TITLE = "Budget: optimisation speed or solution"
OBJECTIVE_COLORS = ("#55a868", "#c44e52", "#8172b3")


def cells(options: Options) -> tuple[pd.DataFrame, list]:
    """One row per (world, objective, rounds) of the studies' STARC verdicts, and the sources
    (MissingStudy only when neither study has runs)."""
    rows, sources, missing = [], [], None
    for study in STUDIES:
        try:
            source = options.study(study)
        except MissingStudy as error:
            missing = missing or error
            continue
        sources.append(source)
        runs = {run.run_id: run for run in source.runs}
        for (context_json, label, metric), row in bootstrap_rows(source).items():
            context = json.loads(context_json)
            if metric != "test_starc" or label != "fa_irl" or "rounds" not in context:
                continue
            c = row.comparison
            fa, std = runs[row.run_id], runs[row.reference_run_id]
            rows.append({"study": study, "world": world_of(fa),
                         "objective": context.get("objective", fa.objective),
                         "rounds": int(context["rounds"]), "starc_fa": c.a, "starc_std": c.b,
                         "difference": c.difference,
                         "relative_percent": relative_change(c.a, c.b), "ci_low": c.ci_low,
                         "ci_high": c.ci_high, "p_holm": row.p_holm, "mde": c.mde,
                         "verdict": row.verdict, "run_id": row.run_id,
                         "reference_run_id": row.reference_run_id,
                         "fa_seed_ci": t_interval(fa.seed_values("test_starc").values()),
                         "std_seed_ci": t_interval(std.seed_values("test_starc").values())})
    if not rows:
        if missing is not None:
            raise missing
        source = sources[0]
        raise MissingStudy(source.study, source.study_file, source.uri,
                           "no FA-IRL vs standard IRL STARC verdicts over fit.rounds")
    frame = pd.DataFrame(rows)
    frame["embedded_first"] = frame["world"] != "embedded"
    frame = frame.sort_values(["embedded_first", "world", "objective", "rounds"])
    return frame.drop(columns="embedded_first"), sources


def reading(part: pd.DataFrame) -> str:
    """Speed or solution, for one world and objective (rows sorted by rounds)."""
    found = part[part["verdict"] != "no detectable difference"]
    largest = part.iloc[-1]
    steps = ", ".join(f"{r.rounds}: {r.difference:+.4f} ({r.verdict})".replace("-", "−")
                      for r in part.itertuples())
    if found.empty:
        return (f"no detectable difference at any budget (MDE at {largest.rounds} rounds "
                f"{largest.mde:.4f}) [{steps}]")
    if largest["verdict"] != "no detectable difference":
        return (f"FA-IRL {largest['verdict']} at {largest['rounds']} rounds too: an effect on "
                f"the solution, not only on speed [{steps}]")
    return (f"an effect at {', '.join(str(r) for r in found['rounds'])} rounds only, none at "
            f"{largest['rounds']}: a matter of the optimisation's course, not of the solution "
            f"[{steps}]")


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt

    data, sources = cells(options)
    remove_outputs(options.out, NAME)
    worlds = list(dict.fromkeys(data["world"]))
    objectives = objective_order(data["objective"])
    colors = dict(zip(objectives, OBJECTIVE_COLORS))
    budgets = sorted(data["rounds"].unique())
    figure_style()
    fig, axes = plt.subplots(2, len(worlds), squeeze=False, sharex=True,
                             figsize=(4.6 * len(worlds), 7.0))
    for column, world in enumerate(worlds):
        top, bottom = axes[0][column], axes[1][column]
        for objective in objectives:
            part = data[(data["world"] == world) & (data["objective"] == objective)]
            if part.empty:
                continue
            color, name = colors[objective], objective_label(objective)
            for method, key, style in (("standard IRL", "std", "--"), ("FA-IRL", "fa", "-")):
                band = list(part[f"{key}_seed_ci"])
                top.plot(part["rounds"], part[f"starc_{key}"], ls=style, marker="o", ms=4,
                         color=color, label=f"{method}, {name}")
                top.fill_between(part["rounds"], [b[0] for b in band], [b[1] for b in band],
                                 color=color, alpha=0.12, lw=0)
            bottom.errorbar(part["rounds"], part["difference"],
                            yerr=[part["difference"] - part["ci_low"],
                                  part["ci_high"] - part["difference"]],
                            color=color, capsize=3, lw=1.4)
            for r in part.itertuples():
                found = r.verdict != "no detectable difference"
                bottom.plot(r.rounds, r.difference, "o", ms=7, color=color,
                            markerfacecolor=color if found else "white")
        bottom.axhline(0.0, color="0.3", lw=0.8)
        top.set_title(world)
        bottom.set_xlabel("rounds (log scale)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
    axes[0][0].set_ylabel("test STARC to r* (lower better)")
    axes[1][0].set_ylabel("STARC(FA-IRL) − STARC(std)")
    legend_above(fig, axes[0][0], ncol=4)
    files = save_figure(fig, options.out, NAME)

    columns = ["world", "objective", "rounds", "STARC std", "STARC FA", "FA − std [95 % CI]",
               "relative", "Holm p", "verdict"]
    rows = [[r.world, objective_label(r.objective), str(r.rounds), fmt(r.starc_std),
             fmt(r.starc_fa), f"{r.difference:+.4f} {fmt_interval(r.ci_low, r.ci_high, 4)}",
             f"{r.relative_percent:+.1f} %", fmt_p(r.p_holm), r.verdict]
            for r in data.itertuples()]
    caption = (f"{selection_note(sources[0])} FA-IRL vs standard IRL test STARC per world, "
               "objective and budget; 95 % prompt × seed bootstrap interval, Holm over each "
               f"study's cells ({', '.join(source.study for source in sources)}).")
    table = write_table(options.out, NAME, columns, rows, caption,
                        data.drop(columns=["fa_seed_ci", "std_seed_ci"]))
    notes = ["Speed or solution, per world and objective (Δ STARC at each budget):", ""]
    for (world, objective), part in data.groupby(["world", "objective"], sort=False):
        notes.append(f"* {world}, {objective_label(objective)}: {reading(part)}")
    used_ids = set(data["run_id"]) | set(data["reference_run_id"])
    used = [(run, (f"{method_label(run.method)}, {objective_label(run.objective)}, "
                   f"{run.param('fit.rounds')} rounds")) for source in sources
            for run in source.runs if run.run_id in used_ids]
    figure_caption = ("One column per world. Top: test STARC of standard IRL (dashed) and "
                      "FA-IRL (solid) against the number of rounds (FA-IRL's schedules scaled to "
                      "them), mean over seeds, band: 95 % t-interval. Bottom: their "
                      "difference with its 95 % prompt × seed bootstrap interval; filled: "
                      "Holm-significant. An effect that vanishes as the rounds grow is one of "
                      "optimisation speed.")
    return Section(TITLE, [(files[0], figure_caption)], [(markdown_table(columns, rows), caption)],
                   files + table, used, sources, notes="\n".join(notes))


if __name__ == "__main__":
    script_main(NAME)
