"""Ablation table: is the failure path R_F needed?

FA-IRL (R = R_D + R_F) against the failure loss routed into R_D alone (no R_F), a failure
head without a failure loss, and standard IRL, under each objective: every held-out metric
(mean ± std over seeds), and Δ F1 / Δ STARC against standard IRL with the prompt × seed
bootstrap interval and Holm verdict (analysis.common.comparison). Study: ablation_no_rf.
"""

from __future__ import annotations

from analysis.common import (
    comparison,
    markdown_table,
    method_label,
    objective_label,
    objective_order,
    script_main,
    selection_note,
    study_data,
    write_table,
)
from fairl.report import Options, Section
from fairl.runs.read import StudyRuns, TrialRun

NAME = "ablation_no_rf"
STUDY = "ablation_no_rf"
TITLE = "Ablation: the failure path R_F"


def variant_entries(source: StudyRuns) -> list[tuple[str, str, TrialRun, TrialRun | None]]:
    """(objective, variant in words, run, standard IRL run of that objective) per variant.

    Variants in the order the study file lists them; a configuration run twice: the later.
    """
    order = list(source.spec.get("variants") or {})
    cells: dict[tuple[str, str], TrialRun] = {}
    for run in source.runs:
        cells[(run.objective, run.variant or run.method)] = run
    entries = []
    for objective in objective_order(objective for objective, _ in cells):
        variants = sorted((variant for obj, variant in cells if obj == objective),
                          key=lambda v: (order.index(v) if v in order else len(order), v))
        reference = next((run for (obj, _), run in cells.items()
                          if obj == objective and run.method == "standard_irl"), None)
        entries += [(objective, variant, cells[(objective, variant)], reference)
                    for variant in variants]
    return entries


def variant_table(options: Options, name: str, study: str, title: str, what: str) -> Section:
    """The table of a variant ablation (shared by the failure-path and failure-source items)."""
    source, entries = study_data(options, name, study, variant_entries, "no runs with variants")
    shown = [(objective_label(objective), method_label(variant), run, reference)
             for objective, variant, run, reference in entries]
    columns, rows, data = comparison(shown, "objective", "variant", "standard IRL", source)
    seeds = max(len(run.seeds) for _, _, run, _ in entries)
    caption = (f"{selection_note(source)} {what}: held-out metrics, mean ± std over {seeds} "
               "seeds (one run per cell: nothing selected beyond it); Δ F1 and Δ STARC vs "
               "standard IRL (same objective) with the relative change, the 95 % paired prompt × "
               "seed bootstrap interval and the verdict, Holm-adjusted per metric across the "
               "table's comparisons.")
    files = write_table(options.out, name, columns, rows, caption, data)
    used = [(run, f"{method_label(variant)}, {objective_label(objective)}")
            for objective, variant, run, _ in entries]
    used.sort(key=lambda item: item[0].trial)
    return Section(title, [], [(markdown_table(columns, rows), caption)], files, used, [source])


def build(options: Options) -> Section:
    return variant_table(options, NAME, STUDY, TITLE, "Failure path ablation")


if __name__ == "__main__":
    script_main(NAME)
