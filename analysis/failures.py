"""Failure inspection: the top-k failure pairs of one run, for reading by hand.

The paper's suggested check ("manually inspect top-k failures"): the training pairs that
spent most rounds in F_t (ties: lowest margin), with the learned margin Δ, the ground-truth
scores r* of both outputs, whether r* agrees with the preference, and the texts when the
world has them. From the run's failures.csv, first seed. Study: main_table (FA-IRL,
max-margin), or any run by `--run`.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.common import fmt, markdown_table, remove_outputs, script_main
from analysis.training_curves import chosen_runs, run_label
from fairl.report import Options, Section

NAME = "failures"
STUDY = "main_table"
TITLE = "Failure inspection: top-k failure pairs"
TEXT_WIDTH = 160  # characters of each text shown in the Markdown table (the CSV keeps all)


def short(text, width: int = TEXT_WIDTH) -> str:
    if not isinstance(text, str):
        return "–"
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def verdict(row: dict) -> str:
    """Does r* order the pair as the data does (aligned output better)?"""
    gt = row.get("gt_margin")
    if gt is None or not math.isfinite(gt):
        return "–"
    return "r* agrees" if gt > 0 else "r* prefers base" if gt < 0 else "tie under r*"


def build(options: Options) -> Section:
    source, run, _ = chosen_runs(options)
    frame = pd.read_csv(source.artifact(run, "failures.csv"), keep_default_na=False,
                        na_values={"margin": [""], "gt_margin": [""], "gt_T": [""],
                                   "gt_NT": [""]})
    seed = int(frame["seed"].min())
    top = frame[frame["seed"] == seed].sort_values("rank").head(options.top_k)
    remove_outputs(options.out, NAME)
    has_text = "text_T" in top
    columns = ["rank", "pair", "rounds in F_t", "margin Δ", "r*(o_T)", "r*(o_NT)", "r* order"]
    columns += ["T→NT"] if "tnt" in top else []
    columns += ["prompt", "aligned output o_T", "base output o_NT"] if has_text else []
    rows = []
    for row in top.to_dict("records"):
        cells = [str(row["rank"]), str(row["pair"]), str(row["failure_rounds"]),
                 fmt(row["margin"]), fmt(row.get("gt_T", math.nan)),
                 fmt(row.get("gt_NT", math.nan)), verdict(row)]
        if "tnt" in top:
            cells.append("yes" if str(row["tnt"]) == "True" else "no")
        if has_text:
            cells += [short(row.get("prompt")), short(row.get("text_T")),
                      short(row.get("text_NT"))]
        rows.append(cells)
    what = f"{run_label(run)}, study {source.study}, run {run.run_id[:8]}, seed {seed}"
    caption = (f"Top {len(rows)} training pairs by rounds spent in the failure set F_t "
               f"({what}): learned margin Δ = R(o_T) − R(o_NT), ground-truth scores r*"
               + (" and texts" if has_text else " (this world has no texts)") + ".")
    folder = options.out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / f"{NAME}.md"
    md.write_text(f"{caption}\n\n{markdown_table(columns, rows)}\n", encoding="utf-8")
    csv = folder / f"{NAME}.csv"
    top.to_csv(csv, index=False, lineterminator="\n")
    reversed_pairs = int((top["gt_margin"] < 0).sum()) if "gt_margin" in top else 0
    summary = (f"Of these {len(rows)} pairs, r* prefers the base output in {reversed_pairs} "
               "(label noise or a preference r* does not share); the others are pairs the "
               "reward found hard although r* orders them as the data does."
               if "gt_margin" in top else "")
    return Section(TITLE, [], [(markdown_table(columns, rows), caption)], [md, csv],
                   [(run, f"{run_label(run)}, seed {seed}")], [source], notes=summary)


if __name__ == "__main__":
    script_main(NAME)
