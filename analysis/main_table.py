"""Main table: {standard IRL, FA-IRL} × {max-margin, max-entropy} on held-out pairs.

Per objective and metric: each method's test mean ± std over seeds, the difference FA-IRL −
standard IRL with its 95 % interval, the probability of improvement, the Holm-adjusted
verdict and the minimum detectable effect: the paired prompt × seed bootstrap of
fairl.study.verdicts for every metric (the numbers the study's launch run logged), Holm per
metric across the objectives; a row without one (runs of an older store) falls back to a
paired t-interval over seeds only, labelled so, with no verdict. The paired t-test over seeds
stays as a secondary column. Reference rows: the linear oracle and standard IRL on Bradley–Terry(r*) labels
(fairl.study.references, from the launch run). Study: main_table.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from analysis.common import (
    METRICS,
    bootstrap_rows,
    fmt,
    fmt_interval,
    fmt_mean_std,
    fmt_p,
    fmt_percent,
    markdown_table,
    objective_label,
    objective_order,
    paired_t_interval,
    paired_tests,
    relative_change,
    script_main,
    selection_note,
    study_data,
    t_interval,
    write_table,
)
from fairl.report import Options, Section
from fairl.runs.read import StudyRuns, TrialRun

NAME = "main_table"
STUDY = "main_table"
TITLE = "Main table: standard IRL vs FA-IRL"
BOOTSTRAP = "prompt×seed bootstrap"
SEEDS_ONLY = "seeds only (paired t)"
COLUMNS = ["objective", "metric", "standard IRL", "FA-IRL", "Δ (FA − std)", "95 % CI of Δ",
           "interval", "P(FA better)", "verdict (Holm)", "MDE", "rel. change", "p (paired t)"]


def method_pairs(runs: StudyRuns) -> list[tuple[str, TrialRun, TrialRun]]:
    """(objective, standard IRL run, FA-IRL run) for every objective that has both."""
    cells = runs.by_method_objective()
    objectives = objective_order(objective for _, objective in cells)
    return [(objective, cells[("standard_irl", objective)], cells[("fa_irl", objective)])
            for objective in objectives
            if ("standard_irl", objective) in cells and ("fa_irl", objective) in cells]


def _seed_statistics(prefix: str, run: TrialRun, metric: str) -> dict:
    low, high = t_interval(run.seed_values(metric).values())
    return {f"{prefix}_mean": run.metrics[metric],
            f"{prefix}_std": run.metrics.get(f"{metric}_std", float("nan")),
            f"{prefix}_ci_low": low, f"{prefix}_ci_high": high,
            f"{prefix}_n": len(run.seed_values(metric))}


def _difference(verdict_row, fa: TrialRun, standard: TrialRun, metric: str) -> dict:
    """The interval of FA − standard: the bootstrap row when there is one, else seeds only."""
    if verdict_row is not None:
        c = verdict_row.comparison
        return {"interval": BOOTSTRAP, "diff_ci_low": c.ci_low, "diff_ci_high": c.ci_high,
                "prob_improvement": c.prob_a_better, "p_bootstrap": c.p_value,
                "p_holm": verdict_row.p_holm, "verdict": verdict_row.verdict, "mde": c.mde,
                "n_prompts": c.n_prompts, "n_boot": c.n_boot}
    low, high = paired_t_interval(fa.seed_values(metric), standard.seed_values(metric))
    return {"interval": SEEDS_ONLY, "diff_ci_low": low, "diff_ci_high": high,
            "prob_improvement": math.nan, "p_bootstrap": math.nan, "p_holm": math.nan,
            "verdict": "", "mde": math.nan, "n_prompts": math.nan, "n_boot": math.nan}


def comparison_rows(runs: StudyRuns) -> pd.DataFrame:
    """One row per (objective, metric) with both methods' statistics, full precision."""
    pairs = method_pairs(runs)
    verdict_rows = bootstrap_rows(runs) if pairs else {}
    rows = []
    for objective, standard, fa in pairs:
        context = json.dumps({"objective": objective}, sort_keys=True)
        for metric, _, _ in METRICS:
            if metric not in standard.metrics or metric not in fa.metrics:
                continue
            row = {"objective": objective, "metric": metric,
                   **_seed_statistics("standard", standard, metric),
                   **_seed_statistics("fa_irl", fa, metric)}
            p_t, p_w, n = paired_tests(fa.seed_values(metric), standard.seed_values(metric))
            row.update({"difference": row["fa_irl_mean"] - row["standard_mean"],
                        "relative_change_percent": relative_change(row["fa_irl_mean"],
                                                                   row["standard_mean"]),
                        **_difference(verdict_rows.get((context, "fa_irl", metric)), fa,
                                      standard, metric),
                        "p_paired_t": p_t, "p_wilcoxon": p_w, "n_paired_seeds": n,
                        "standard_run_id": standard.run_id, "fa_irl_run_id": fa.run_id})
            rows.append(row)
    return pd.DataFrame(rows)


def _formatted(row: dict) -> list[str]:
    names = {m: s for m, s, _ in METRICS}
    bootstrap = row["interval"] == BOOTSTRAP
    return [objective_label(row["objective"]), names[row["metric"]],
            fmt_mean_std(row["standard_mean"], row["standard_std"]),
            fmt_mean_std(row["fa_irl_mean"], row["fa_irl_std"]),
            fmt_signed(row["difference"]),
            fmt_interval(row["diff_ci_low"], row["diff_ci_high"], 4).replace("-", "−"),
            row["interval"], fmt(row["prob_improvement"], 2) if bootstrap else "–",
            row["verdict"] or "– (seeds only)", fmt(row["mde"], 4) if bootstrap else "–",
            fmt_percent(row["relative_change_percent"]).replace("-", "−"),
            fmt_p(row["p_paired_t"])]


def fmt_signed(value: float, digits: int = 4) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.{digits}f}".replace("-", "−")


def reference_rows(runs: StudyRuns, objectives: list[str]) -> list[list[str]]:
    """Room-to-improve rows (test STARC) from the launch run's reference_* metrics."""
    metrics = runs.launch_metrics
    rows = []
    blank = ["–"] * (len(COLUMNS) - 3)
    if "reference_oracle_test_starc" in metrics:
        rows.append(["reference", "STARC", "linear oracle (ridge of r* on h, train → test): "
                     + fmt(metrics["reference_oracle_test_starc"], 3)] + blank)
    for objective in objectives:
        key = f"reference_bt_irl_{objective}_test_starc"
        if key in metrics:
            text = (f"standard IRL on Bradley–Terry(r*) labels, {objective_label(objective)}: "
                    f"{fmt(metrics[key], 3)}")
            rows.append(["reference", "STARC", text] + blank)
    return rows


def build(options: Options) -> Section:
    runs, data = study_data(options, NAME, STUDY, comparison_rows,
                            "no objective has both a standard IRL and an FA-IRL run")
    records = data.to_dict("records")
    objectives = objective_order(data["objective"])
    table = [_formatted(row) for row in records] + reference_rows(runs, objectives)
    for key in ("reference_oracle_test_starc", "reference_bt_irl_test_starc"):
        data[key] = runs.launch_metrics.get(key, math.nan)
    n = int(data["n_paired_seeds"].max())
    boot = data[data["interval"] == BOOTSTRAP]
    n_boot = int(boot["n_boot"].max()) if not boot.empty else 0
    seeds_only = (" Rows marked seeds only: paired t-interval over seeds (test pairs fixed), "
                  "no verdict." if (data["interval"] == SEEDS_ONLY).any() else "")
    caption = (f"{selection_note(runs)} Held-out metrics, mean ± std over {n} seeds; Δ = "
               f"FA-IRL − standard IRL with its 95 % paired prompt × seed bootstrap interval "
               f"({n_boot} replicates), P(FA better) = share of replicates where FA-IRL is "
               f"better, verdict Holm-adjusted per metric across the objectives at α = 0.05, "
               f"MDE = |Δ| detectable with 80 % power.{seeds_only} STARC: lower is better; "
               f"reference rows: the best linear reward and IRL on ideal labels.")
    files = write_table(options.out, NAME, COLUMNS, table, caption, data)
    used = []
    for objective, standard, fa in method_pairs(runs):
        used += [(standard, f"standard IRL, {objective_label(objective)}"),
                 (fa, f"FA-IRL, {objective_label(objective)}")]
    used.sort(key=lambda item: item[0].trial)
    return Section(TITLE, [], [(markdown_table(COLUMNS, table), caption)], files, used, [runs],
                   notes=starc_summary(data))


def starc_summary(data: pd.DataFrame) -> str:
    """One line: the relative STARC change per objective, next to the paper's figure."""
    starc = data[data["metric"] == "test_starc"]
    if starc.empty:
        return "The world has no ground-truth reward r*: no STARC."
    parts = [f"{objective_label(row['objective'])} "
             f"{fmt_percent(row['relative_change_percent']).replace('-', '−')} "
             f"({row['verdict'] or 'no bootstrap'}, 95 % CI of Δ "
             f"{fmt_interval(row['diff_ci_low'], row['diff_ci_high'], 4)})"
             for row in starc.to_dict("records")]
    return ("Relative STARC change of FA-IRL vs standard IRL: " + "; ".join(parts)
            + " (the paper reports up to −24 % on its data).")


if __name__ == "__main__":
    script_main(NAME)
