"""Re-RLHF: toxicity of the base LM re-trained on each recovered reward, tables and figure.

Table: per reward source (no reward = the base, ground-truth r*, standard IRL, FA-IRL),
mean ± std over seeds of the held-out toxic rate and mean toxicity by the independent judge
(BiLSTM) and by r*'s scorer (the world's: profanity on the default world, its own classifier
on another), KL to the base, perplexity under the base, and the reward-hacking guards (length,
distinct-2, in-sample repetition). Verdicts (table rerlhf.verdicts): FA − standard IRL and
FA − r* on the toxic rates, a paired bootstrap over eval prompts × seeds with Holm and the MDE
(fairl.study.rerlhf_verdicts, the rows the launch run logged); notes add the seeds-only paired
t-tests. Figure: toxic rate by both judges and KL per RLHF step (the step's own training
samples), mean over seeds with a min–max band. Study: rerlhf (studies/rerlhf/rerlhf.yaml, run
by `fairl study run`); its policy runs are read whichever launch made them, or none (the grid
loop before re-RLHF ran as a study).
"""

from __future__ import annotations

import math

import numpy as np

from analysis.common import (
    COLORS,
    figure_style,
    fmt,
    fmt_interval,
    fmt_mean_std,
    fmt_p,
    legend_above,
    markdown_table,
    paired_tests,
    remove_outputs,
    save_figure,
    script_main,
    study_data,
    write_table,
)
from fairl.report import Options, Section, markdown_text
from fairl.runs.read import StudyRuns, TrialRun, load_policy_runs
from fairl.study.rerlhf_verdicts import study_rows

NAME = "rerlhf"
VERDICTS = f"{NAME}.verdicts"  # tables/rerlhf.verdicts.*: removed with the item's outputs
STUDY = "rerlhf/rerlhf"  # studies/rerlhf/rerlhf.yaml
TITLE = "Re-RLHF with recovered rewards"

SOURCES = {"none": "no reward (base)", "ground_truth": "ground truth r*",
           "standard_irl": "standard IRL", "fa_irl": "FA-IRL"}
SOURCE_COLORS = {"none": "#8c8c8c", "ground_truth": "#55a868",
                 "standard_irl": COLORS["standard IRL"], "fa_irl": COLORS["FA-IRL"]}
# (metric, column, scale, digits): rates and toxicities in percent; {r} = r*'s scorer.
COLUMNS = (
    ("tox_rate_bilstm", "toxic % (BiLSTM)", 100, 1),
    ("tox_mean_bilstm", "mean tox. % (BiLSTM)", 100, 1),
    ("tox_rate_{r}", "toxic % (r* scorer)", 100, 1),
    ("tox_mean_{r}", "mean tox. % (r* scorer)", 100, 1),
    ("kl_to_base", "KL to base (nats)", 1, 2),
    ("ppl_base", "perplexity (base)", 1, 1),
    ("length_mean", "length (tokens)", 1, 1),
    ("distinct_2", "distinct-2", 1, 3),
    ("repetition", "repetition", 1, 3),
)
PANELS = (("tox_rate_bilstm", "toxic rate, BiLSTM judge", "toxic samples (%)", 100),
          ("tox_rate_{r}", "toxic rate, r* scorer ({r})", "toxic samples (%)", 100),
          ("kl", "KL to the base", "KL (nats per sample)", 1))
SMOOTH = 5  # running mean over this many steps in the figure
R_STAR_ORIGIN = "r* = log-odds non-toxic by "  # the ground-truth source's reward_origin tag


def r_star_scorer(runs: list[TrialRun]) -> str:
    """The scorer of the world's r* the runs were evaluated with: their tag r_star_scorer, else
    (runs logged before it) the ground-truth source's reward, else profanity (the default
    world's)."""
    for run in runs:
        if run.tags.get("r_star_scorer"):
            return run.tags["r_star_scorer"]
    for run in runs:
        if run.tags.get("reward_origin", "").startswith(R_STAR_ORIGIN):
            return run.tags["reward_origin"].removeprefix(R_STAR_ORIGIN)
    return "profanity"


def for_scorer(specs, r_star: str) -> tuple:
    """COLUMNS or PANELS with r*'s scorer filled in (a hub path shown by its last part)."""
    short = r_star.rstrip("/").rsplit("/", 1)[-1]
    return tuple((metric.format(r=r_star), label.format(r=short), *rest)
                 for metric, label, *rest in specs)


def source_label(name: str) -> str:
    return SOURCES.get(name, name)


def source_order(names) -> list[str]:
    return sorted(set(names), key=lambda n: (list(SOURCES).index(n) if n in SOURCES else 99, n))


def by_source(source: StudyRuns) -> dict[str, list[TrialRun]]:
    """source -> its runs (one per seed), sorted by seed."""
    cells: dict[str, list[TrialRun]] = {}
    for run in source.runs:
        cells.setdefault(run.tags.get("source", "?"), []).append(run)
    return {name: sorted(cells[name], key=lambda run: int(run.tags.get("seed", 0)))
            for name in source_order(cells)}


def seed_values(runs: list[TrialRun], metric: str) -> dict[int, float]:
    return {int(run.tags["seed"]): run.metrics[metric] for run in runs if metric in run.metrics}


def table(cells: dict[str, list[TrialRun]], specs):
    """The per-source table; `specs`: COLUMNS for the runs' r* scorer (for_scorer)."""
    import pandas as pd

    columns = ["reward source", "seeds"] + [column for _, column, _, _ in specs]
    rows, records = [], []
    for name, runs in cells.items():
        record = {"source": name, "n_seeds": len(runs),
                  "seeds": ",".join(run.tags.get("seed", "") for run in runs),
                  "run_ids": ",".join(run.run_id for run in runs)}
        cells_row = [source_label(name), str(len(runs))]
        for metric, _, scale, digits in specs:
            values = np.array(list(seed_values(runs, metric).values()), dtype=float)
            mean = float(values.mean()) if len(values) else math.nan
            std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            record.update({f"{metric}_mean": mean, f"{metric}_std": std})
            cells_row.append(fmt_mean_std(mean * scale, std * scale, digits))
        rows.append(cells_row)
        records.append(record)
    return columns, rows, pd.DataFrame(records)


def comparison_notes(cells: dict[str, list[TrialRun]], specs) -> str:
    """FA-IRL against standard IRL, paired by seed; and the rewards' own held-out quality."""
    lines = []
    fa, standard = cells.get("fa_irl"), cells.get("standard_irl")
    if fa and standard:
        lines.append("FA-IRL's reward against standard IRL's, over seeds only (same seeds, "
                     "budget and evaluation samples; negative = FA-IRL less toxic; the "
                     "verdicts table also resamples the eval prompts):")
        lines.append("")
        for metric, column, scale, digits in specs[:5]:
            a, b = seed_values(fa, metric), seed_values(standard, metric)
            common = sorted(set(a) & set(b))
            if not common:
                continue
            diffs = np.array([a[s] - b[s] for s in common]) * scale
            p_t, _, n = paired_tests(a, b)
            better = sum(d < 0 for d in diffs)
            unit = " pp" if scale == 100 else ""
            lines.append(f"* {markdown_text(column)}: {fmt(diffs.mean(), digits)}{unit} "
                         f"(per seed: {', '.join(fmt(d, digits) for d in diffs)}; FA-IRL "
                         f"lower on {better}/{n} seeds; paired t-test p = {fmt_p(p_t)})")
        lines.append("")
    fits = []
    for name, runs in cells.items():
        f1 = [run.metrics["reward_test_f1"] for run in runs if "reward_test_f1" in run.metrics]
        starc = [run.metrics["reward_test_starc"] for run in runs
                 if "reward_test_starc" in run.metrics]
        if f1:
            fits.append(f"{source_label(name)} F1 {np.mean(f1):.3f}, STARC {np.mean(starc):.3f}"
                        if starc else f"{source_label(name)} F1 {np.mean(f1):.3f}")
    if fits:
        lines.append("Rewards used (held-out pairs of the world, mean over seeds): "
                     + "; ".join(fits) + ".")
        lines.append("")
    lines.append("RLOO advantages are divided by their batch std, so every source gets the "
                 "same learning rate and KL weight whatever its reward scale.")
    return "\n".join(lines)


def curves(source: StudyRuns, runs: list[TrialRun]):
    """(step, seed) frame of the training curves of `runs` (curves.csv artifacts)."""
    import pandas as pd

    frames = []
    for run in runs:
        if run.tags.get("source_kind") == "base":
            continue  # the base trains nothing (and a served store has no file to say so)
        try:
            frame = pd.read_csv(source.artifact(run, "curves.csv"))
        except (FileNotFoundError, pd.errors.EmptyDataError):
            continue
        frames.append(frame.assign(seed=int(run.tags["seed"])))
    return pd.concat(frames, ignore_index=True) if frames else None


def figure(source: StudyRuns, cells: dict[str, list[TrialRun]], out, panels):
    import matplotlib.pyplot as plt

    figure_style()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.9))
    drawn = 0
    for name, runs in cells.items():
        frame = curves(source, runs)
        if frame is None:
            continue
        drawn += 1
        for ax, (column, title, ylabel, scale) in zip(axes, panels):
            if column not in frame:
                continue
            wide = frame.pivot_table(index="step", columns="seed", values=column) * scale
            window = min(SMOOTH, len(wide))
            smooth = wide.rolling(window, min_periods=1).mean()
            color = SOURCE_COLORS.get(name, "#937860")
            ax.plot(smooth.index, smooth.mean(axis=1), color=color, lw=1.8,
                    label=f"{source_label(name)} ({wide.shape[1]} seed"
                          + ("s)" if wide.shape[1] > 1 else ")"))
            if wide.shape[1] > 1:
                ax.fill_between(smooth.index, smooth.min(axis=1), smooth.max(axis=1),
                                color=color, alpha=0.18, lw=0)
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.set_xlabel("RLHF step")
    if not drawn:
        plt.close(fig)
        return []
    legend_above(fig, next(ax for ax in axes if ax.get_legend_handles_labels()[0]))
    return save_figure(fig, out, NAME)


VERDICT_COLUMNS = ["comparison", "judge", "Δ toxic % (A − B)", "95 % CI (bootstrap)",
                   "P(A less toxic)", "Holm p", "MDE", "verdict", "prompts × seeds"]


def verdict_table(rows, r_star: str):
    """The verdicts of fairl.study.rerlhf_verdicts as (columns, formatted rows, DataFrame)."""
    import pandas as pd

    formatted, records = [], []
    for row in rows:
        c = row.comparison
        judge = "BiLSTM" if row.metric == "tox_rate_bilstm" else (
            "r* scorer" if row.metric == f"tox_rate_{r_star}" else row.metric)
        formatted.append([f"{source_label(row.label)} − {source_label(row.reference)}", judge,
                          fmt(100 * c.difference, 1),
                          fmt_interval(100 * c.ci_low, 100 * c.ci_high, 1),
                          fmt(c.prob_a_better, 3), fmt_p(row.p_holm), fmt(100 * c.mde, 1),
                          row.verdict, f"{c.n_prompts} × {c.n_seeds}"])
        records.append({"label": row.label, "reference": row.reference, "metric": row.metric,
                        "a": c.a, "b": c.b, "difference": c.difference, "ci_low": c.ci_low,
                        "ci_high": c.ci_high, "p_value": c.p_value, "p_holm": row.p_holm,
                        "prob_a_better": c.prob_a_better, "mde": c.mde,
                        "verdict": row.verdict, "n_prompts": c.n_prompts,
                        "n_seeds": c.n_seeds, "n_boot": c.n_boot, "run_ids": row.run_id,
                        "reference_run_ids": row.reference_run_id})
    return VERDICT_COLUMNS, formatted, pd.DataFrame(records)


def policy_runs(options: Options, stem: str, hint: str | None = None) -> StudyRuns:
    """The study's policy runs (fairl.runs.read.load_policy_runs), on the report's world."""
    name, study_file = options.experiment(stem)
    return load_policy_runs(options.uri, name, study_file, hint)


def build(options: Options) -> Section:
    if not (options.studies_dir / f"{STUDY}.yaml").is_file():
        # A studies folder without the re-RLHF study (e.g. a shrunk set of IRL studies):
        # nothing to look for, and nothing to ask the user to run.
        remove_outputs(options.out, NAME)
        return Section(TITLE, [], [], [], [], [], notes=(
            f"Skipped: {options.studies_dir} has no {STUDY}.yaml."))
    source, cells = study_data(options, NAME, STUDY, by_source, "no policy runs",
                               load=policy_runs)
    r_star = r_star_scorer(source.runs)
    specs = for_scorer(COLUMNS, r_star)
    columns, rows, data = table(cells, specs)
    seeds = max(len(runs) for runs in cells.values())
    first = source.runs[0]
    eval_prompts = first.params.get("n_eval_prompts", "?")
    samples = first.param("eval.samples") if "eval.samples" in first.params else "?"
    kind = first.param("eval.prompts.kind") if "eval.prompts.kind" in first.params else "?"
    kind = {"all": "toxic and benign", "toxic": "toxic", "benign": "benign"}.get(kind, kind)
    split = first.param("eval.prompts.split") if "eval.prompts.split" in first.params else "?"
    split = "held-out test" if split == "test" else split
    steps = next((run.param("rlhf.steps") for run in source.runs if "rlhf.steps" in run.params),
                 "?")
    caption = (f"Re-RLHF of the base LM ({first.params.get('base_model', '?')}) on each reward "
               f"source, {steps} RLOO steps each, evaluated on {eval_prompts} {kind} prompts of "
               f"the {split} split ({samples} samples each): toxic rate (toxicity >= "
               f"{first.params.get('threshold', '0.5')}) and mean toxicity by the independent "
               f"BiLSTM judge and by r*'s scorer ({r_star}), KL to the base, perplexity under "
               f"the base, length, distinct-2 and repetition; mean ± std over up to {seeds} "
               "seeds.")
    files = write_table(options.out, NAME, columns, rows, caption, data)
    tables = [(_markdown(columns, rows), caption)]
    verdicts = study_rows(source)
    if verdicts:
        n_boot = verdicts[0].comparison.n_boot
        verdict_caption = (
            f"FA-IRL's policy against standard IRL's and r*'s: difference of the toxic rate "
            f"(percentage points, A − B; negative = A less toxic), 95 % paired bootstrap "
            f"interval over the eval prompts (each with its {samples} samples) × the seeds "
            f"both sources have ({n_boot} replicates), P(A less toxic) = share of replicates "
            f"with A's rate lower, verdict Holm-adjusted across these rows at α = 0.05, MDE = "
            f"|Δ| detectable with 80 % power.")
        v_columns, v_rows, v_data = verdict_table(verdicts, r_star)
        files += write_table(options.out, VERDICTS, v_columns, v_rows, verdict_caption, v_data)
        tables.append((_markdown(v_columns, v_rows), verdict_caption))
    figures = figure(source, cells, options.out, for_scorer(PANELS, r_star))
    section_figures = []
    if figures:
        section_figures = [(figures[0], (
            f"Toxicity over training: toxic rate of each RLHF step's own samples (training "
            f"prompts, {SMOOTH}-step running mean) by the BiLSTM judge and by r*'s scorer, and "
            f"the KL to the base; mean over seeds, band: min–max over seeds. Step 1 samples the "
            f"base itself (LoRA starts at zero)."))]
    used = [(run, f"{source_label(run.tags.get('source', '?'))}, seed {run.tags.get('seed')}")
            for run in source.runs]
    return Section(TITLE, section_figures, tables, figures + files, used, [source],
                   notes=comparison_notes(cells, specs))


def _markdown(columns, rows) -> str:
    return markdown_table(columns, rows)


if __name__ == "__main__":
    script_main(NAME)
