"""The claims ledger: every claim of the paper, each world it was measured in, a verdict, the runs.

Built from logged runs only (Theorem 1 from the linear programs of analysis.feasible_width). A
claim is measured as cells, each a paired prompt × seed bootstrap on one set of held-out pairs
(fairl.study.verdicts.Bootstraps / study_rows), oriented so that "better" is what the paper
says (e.g. STARC(FA-IRL) − STARC(standard IRL) < 0). Per claim and world (`world_of`: the runs'
`world` tag, SIR split by its misspecification m; the dataset hashes are in the provenance)
the cells form one Holm family (a configuration two studies ran on one world, i.e. equal test
rewards, is one cell):
* reproduced: some cell significant in the paper's direction, none against it;
* opposite: some against, none for; mixed: both;
* not reproduced: none significant; MDE = the largest over the K cells of
  (z_{1−α/2K} + z_0.8)·SE, an effect every cell would have shown with 80 % power at Holm's
  first step;
* not measured: no runs, with the command that measures it.
A row shows the best cell in the paper's direction (for "up to" claims the maximum over the
conditions) with its Holm-adjusted p, never the raw best alone. The configurations are the
paper's defaults fixed in grid studies that select on validation (nothing is chosen on test).
Studies are read through `Options.study` (on `fairl report --world`, their `<study>@<world id>`
experiments).
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from analysis.claims_cells import CLAIMS, Cell, Judged, Ledger, world_order
from analysis.common import fmt_p, markdown_table, remove_outputs, script_main, write_table
from fairl.report import Options, Section
from fairl.stats import holm, minimum_detectable_effect, verdict

NAME = "claims"
STUDY = "main_table"  # and every study the claims name (analysis.claims_cells.CLAIMS)
TITLE = "Claims ledger: does the paper reproduce?"
ALPHA = 0.05
COLUMNS = ["claim", "paper", "world", "measured (95 % CI), best cell",
           "cells: for / against / n.d.", "verdict", "runs (best cell)"]


@dataclasses.dataclass
class Row:
    """One (claim, world) line of the ledger."""

    claim: str
    paper: str
    world: str
    measured: str
    counts: str
    verdict: str
    runs: list[str]
    record: dict


def _signed(value: float, digits: int = 4) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.{digits}f}".replace("-", "−")


def cell_text(cell: Cell, p_holm: float) -> str:
    """The measured value of a cell: the two sides, the difference, its interval, Holm p."""
    c = cell.comparison
    if cell.text:
        return cell.text
    values = f"{c.a:.3f} vs {c.b:.3f}, " if cell.show_values else ""
    relative = (f" ({_signed(100 * c.difference / abs(c.b), 1)} %)"
                if cell.relative and c.b else "")
    oracle = "" if cell.oracle is None else f"; linear oracle {cell.oracle:.3f}"
    return (f"{cell.what}: {values}Δ {_signed(c.difference)}{relative} "
            f"[{_signed(c.ci_low)}, {_signed(c.ci_high)}], Holm p {fmt_p(p_holm)} "
            f"({cell.condition}{oracle})")


def judge(claim, world: str, cells: list[Cell]) -> Row:
    """Holm over the world's cells of one claim; the verdict and the best cell."""
    p_holm = holm([cell.comparison.p_value for cell in cells])
    words = [verdict(cell.comparison.difference, p, cell.comparison.lower_is_better, ALPHA)
             for cell, p in zip(cells, p_holm)]
    found, against = words.count("better"), words.count("worse")

    def score(index: int) -> float:  # how far the cell goes in the paper's direction
        c = cells[index].comparison
        value = c.difference / abs(c.b) if cells[index].relative and c.b else c.difference
        return -value if c.lower_is_better else value

    best = max(range(len(cells)), key=score)
    mde = max(minimum_detectable_effect(cell.comparison.se, ALPHA / len(cells))
              for cell in cells)
    worst = ""
    if against:  # the strongest significant cell against the paper, named beside the verdict
        index = min((i for i, w in enumerate(words) if w == "worse"), key=score)
        c = cells[index].comparison
        worst = (f"; strongest against: {cells[index].condition}, Δ {_signed(c.difference)} "
                 f"[{_signed(c.ci_low)}, {_signed(c.ci_high)}], Holm p {fmt_p(p_holm[index])}")
    if found and against:
        word = f"mixed ({found} for, {against} against{worst})"
    elif found:
        word = "reproduced"
    elif against:
        word = f"opposite ({against} of {len(cells)} cells against{worst})"
    else:
        unit = ""
        if cells[best].relative and cells[best].comparison.b:
            unit = f" ({100 * mde / abs(cells[best].comparison.b):.1f} % of the reference)"
        word = (f"not reproduced: an effect of {mde:.4f}{unit} or more would have been seen "
                "(80 % power, Holm)")
    runs = [run.run_id for run in cells[best].runs]
    record = {"claim": claim.key, "world": world, "verdict": word.split(":")[0],
              "cells": len(cells), "for": found, "against": against, "mde": mde,
              "best_condition": cells[best].condition, "best_p_holm": float(p_holm[best]),
              **{f"best_{k}": v for k, v in dataclasses.asdict(cells[best].comparison).items()},
              "best_run_ids": " ".join(runs),
              "all_run_ids": " ".join(run.run_id for cell in cells for run in cell.runs)}
    return Row(claim.text, claim.paper, world, cell_text(cells[best], p_holm[best]),
               f"{found} / {against} / {len(cells) - found - against}", word, runs, record)


def ledger_rows(ledger: Ledger) -> tuple[list[Row], list[dict]]:
    """Every (claim, world) row, and every cell with its Holm p (claims_cells.csv)."""
    rows, cell_records = [], []
    for claim in CLAIMS:
        measured = claim.measure(ledger)
        if isinstance(measured, Judged):  # a claim judged outside the bootstrap (Theorem 1)
            rows.append(Row(claim.text, claim.paper, measured.world, measured.measured, "–",
                            measured.verdict, measured.runs,
                            {"claim": claim.key, "world": measured.world, **measured.record}))
            continue
        by_world: dict[str, list[Cell]] = {}
        seen = set()
        for cell in measured:  # a configuration two studies ran on one world counts once
            if ledger.evidence(cell) not in seen:
                seen.add(ledger.evidence(cell))
                by_world.setdefault(cell.world, []).append(cell)
        if not by_world:
            command = ledger.command(claim.studies[0])
            rows.append(Row(claim.text, claim.paper, "–", "–", "–",
                            f"not measured: run `{command}`", [],
                            {"claim": claim.key, "verdict": "not measured", "command": command}))
            continue
        for world in world_order(by_world):
            row = judge(claim, world, by_world[world])
            rows.append(row)
            p_holm = holm([cell.comparison.p_value for cell in by_world[world]])
            if claim.key == "starc":  # every FA-IRL − standard IRL STARC cell, for the notes
                ledger.fa_cells += list(zip(by_world[world], p_holm))
            cell_records += [{"claim": claim.key, "world": world, "condition": cell.condition,
                              "what": cell.what, "p_holm": float(p),
                              **dataclasses.asdict(cell.comparison),
                              "run_ids": " ".join(run.run_id for run in cell.runs)}
                             for cell, p in zip(by_world[world], p_holm)]
    return rows, cell_records


def summary(rows: list[Row], ledger: Ledger) -> str:
    """The ledger in words: what reproduces, what does not (with power), where FA-IRL helps."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        key = row.verdict.split(":")[0].split(" (")[0]
        groups.setdefault(key, []).append(f"{row.record['claim']} ({row.world})"
                                          if row.world != "–" else row.record["claim"])
    lines = [f"{len(rows)} claim × world rows: " + "; ".join(
        f"{key} {len(items)} ({', '.join(items)})" for key, items in groups.items()) + "."]
    helps = [f"{cell.world}, {cell.condition}" for cell, p in ledger.fa_vs_standard_cells()
             if verdict(cell.comparison.difference, p, True, ALPHA) == "better"]
    lines.append("Where FA-IRL beats standard IRL on test STARC (Holm over every FA-IRL − "
                 f"standard IRL cell of its world; {ledger.fa_cell_count()} cells in all "
                 "worlds): " + ("; ".join(helps) if helps else "nowhere") + ".")
    return "\n\n".join(lines)


def build(options: Options) -> Section:
    ledger = Ledger(options)
    rows, cell_records = ledger_rows(ledger)
    if not ledger.sources:
        ledger.raise_missing()
    remove_outputs(options.out, NAME)
    shown = [[row.claim, row.paper, row.world, row.measured, row.counts, row.verdict,
              " ".join(run[:8] for run in row.runs)] for row in rows]
    caption = ("The paper's claims, each measured on held-out pairs in every world where a "
               "study ran: the best cell in the paper's direction with its 95 % paired prompt × "
               "seed bootstrap interval; verdict Holm-adjusted over the claim's cells in that "
               "world at α = 0.05 (MDE: 80 % power at Holm's first step); configurations fixed "
               "in grid studies, selected on validation, never on test. claims.csv has every "
               "row, claims_cells.csv every cell with its runs.")
    files = write_table(options.out, NAME, COLUMNS, shown, caption,
                        pd.DataFrame([row.record for row in rows]))
    cells_csv = options.out / "tables" / f"{NAME}_cells.csv"
    pd.DataFrame(cell_records).to_csv(cells_csv, index=False, lineterminator="\n")
    used = [(run, label) for run, label in ledger.used.values()]
    used.sort(key=lambda item: (item[0].experiment_id, item[0].trial))
    return Section(TITLE, [], [(markdown_table(COLUMNS, shown), caption)], files + [cells_csv],
                   used, ledger.sources, notes=summary(rows, ledger))


if __name__ == "__main__":
    script_main(NAME)
