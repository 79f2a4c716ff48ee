"""Main table: {standard IRL, FA-IRL} × {max-margin, max-entropy} on held-out pairs.

Per objective and metric: mean ± std over seeds and the 95 % t-interval of each method, the
difference FA-IRL − standard IRL, its relative change (for STARC the paper reports up to
−24 %), and paired tests over seeds (t-test and Wilcoxon signed-rank). Study: main_table.
"""

from __future__ import annotations

import pandas as pd

from analysis.common import (
    METRICS,
    fmt,
    fmt_interval,
    fmt_mean_std,
    fmt_p,
    fmt_percent,
    markdown_table,
    objective_label,
    objective_order,
    paired_tests,
    relative_change,
    remove_outputs,
    script_main,
    t_interval,
    write_table,
)
from fairl.report import Options, Section
from fairl.runs.read import MissingStudy, StudyRuns, TrialRun

NAME = "main_table"
STUDY = "main_table"
TITLE = "Main table: standard IRL vs FA-IRL"


def method_pairs(runs: StudyRuns) -> list[tuple[str, TrialRun, TrialRun]]:
    """(objective, standard IRL run, FA-IRL run) for every objective that has both."""
    cells = runs.by_method_objective()
    objectives = objective_order(objective for _, objective in cells)
    return [(objective, cells[("standard_irl", objective)], cells[("fa_irl", objective)])
            for objective in objectives
            if ("standard_irl", objective) in cells and ("fa_irl", objective) in cells]


def comparison_rows(runs: StudyRuns) -> pd.DataFrame:
    """One row per (objective, metric) with both methods' statistics, full precision."""
    rows = []
    for objective, standard, fa in method_pairs(runs):
        for metric, _, _ in METRICS:
            if metric not in standard.metrics or metric not in fa.metrics:
                continue
            row = {"objective": objective, "metric": metric}
            for prefix, run in (("standard", standard), ("fa_irl", fa)):
                low, high = t_interval(run.seed_values(metric).values())
                row.update({f"{prefix}_mean": run.metrics[metric],
                            f"{prefix}_std": run.metrics.get(f"{metric}_std", float("nan")),
                            f"{prefix}_ci_low": low, f"{prefix}_ci_high": high,
                            f"{prefix}_n": len(run.seed_values(metric))})
            p_t, p_w, n = paired_tests(fa.seed_values(metric), standard.seed_values(metric))
            row.update({"difference": row["fa_irl_mean"] - row["standard_mean"],
                        "relative_change_percent": relative_change(row["fa_irl_mean"],
                                                                   row["standard_mean"]),
                        "p_paired_t": p_t, "p_wilcoxon": p_w, "n_paired_seeds": n,
                        "standard_run_id": standard.run_id, "fa_irl_run_id": fa.run_id})
            rows.append(row)
    return pd.DataFrame(rows)


def build(options: Options) -> Section:
    runs = options.study(STUDY)
    data = comparison_rows(runs)
    if data.empty:
        raise MissingStudy(runs.study, runs.study_file, runs.uri,
                           "no objective has both a standard IRL and an FA-IRL run")
    remove_outputs(options.out, NAME)
    columns = ["objective", "metric", "standard IRL", "95 % CI", "FA-IRL", "95 % CI",
               "Δ (FA − std)", "rel. change", "p (paired t)", "p (Wilcoxon)"]
    table = []
    for row in data.to_dict("records"):
        table.append([
            objective_label(row["objective"]), {m: s for m, s, _ in METRICS}[row["metric"]],
            fmt_mean_std(row["standard_mean"], row["standard_std"]),
            fmt_interval(row["standard_ci_low"], row["standard_ci_high"]),
            fmt_mean_std(row["fa_irl_mean"], row["fa_irl_std"]),
            fmt_interval(row["fa_irl_ci_low"], row["fa_irl_ci_high"]),
            fmt(row["difference"], 4).replace("-", "−"),
            fmt_percent(row["relative_change_percent"]).replace("-", "−"),
            fmt_p(row["p_paired_t"]), fmt_p(row["p_wilcoxon"])])
    n = int(data["n_paired_seeds"].max())
    caption = (f"Held-out metrics of standard IRL and FA-IRL, mean ± std and 95 % t-interval "
               f"over {n} seeds; p-values of paired tests over seeds (FA-IRL vs standard IRL); "
               f"STARC: lower is better.")
    files = write_table(options.out, NAME, columns, table, caption, data)
    used = []
    for objective, standard, fa in method_pairs(runs):
        used += [(standard, f"standard IRL, {objective_label(objective)}"),
                 (fa, f"FA-IRL, {objective_label(objective)}")]
    used.sort(key=lambda item: item[0].trial)
    return Section(TITLE, [], [(markdown_table(columns, table), caption)], files, used, [runs],
                   notes=starc_summary(data))


def starc_summary(data: pd.DataFrame) -> str:
    """One line: the relative STARC change per objective, next to the paper's figure."""
    starc = data[data["metric"] == "test_starc"]
    if starc.empty:
        return "The world has no ground-truth reward r*: no STARC."
    parts = [f"{objective_label(row['objective'])} "
             f"{fmt_percent(row['relative_change_percent']).replace('-', '−')} "
             f"(p = {fmt_p(row['p_paired_t'])})" for row in starc.to_dict("records")]
    return ("Relative STARC change of FA-IRL vs standard IRL: " + "; ".join(parts)
            + " (the paper reports up to −24 % on its data).")


if __name__ == "__main__":
    script_main(NAME)
