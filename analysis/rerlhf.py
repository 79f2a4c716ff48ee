"""Re-RLHF: toxicity of the base LM re-trained on each recovered reward, table and figure.

Table: per reward source (no reward = the base, ground-truth r*, standard IRL, FA-IRL),
mean ± std over seeds of the held-out toxic rate and mean toxicity by the independent judge
(BiLSTM) and by r*'s scorer (profanity), KL to the base, perplexity under the base, and the
reward-hacking guards (length, distinct-2, in-sample repetition); notes compare FA-IRL with
standard IRL paired by seed. Figure: toxic rate by both judges and KL per RLHF step (the
step's own training samples), mean over seeds with a min–max band. Study: rerlhf
(studies/rerlhf/rerlhf.yaml, run by `fairl rerlhf run`; not an Optuna study).
"""

from __future__ import annotations

import math

import numpy as np

from analysis.common import (
    COLORS,
    figure_style,
    fmt,
    fmt_mean_std,
    fmt_p,
    legend_above,
    markdown_table,
    paired_tests,
    remove_outputs,
    save_figure,
    script_main,
    write_table,
)
from fairl.report import Options, Section, markdown_text
from fairl.runs.read import StudyRuns, TrialRun, load_policy_runs
from fairl.runs.store import default_tracking_uri

NAME = "rerlhf"
STUDY = "rerlhf/rerlhf"  # studies/rerlhf/rerlhf.yaml (a subfolder: not an IRL study file)
TITLE = "Re-RLHF with recovered rewards"

SOURCES = {"none": "no reward (base)", "ground_truth": "ground truth r*",
           "standard_irl": "standard IRL", "fa_irl": "FA-IRL"}
SOURCE_COLORS = {"none": "#8c8c8c", "ground_truth": "#55a868",
                 "standard_irl": COLORS["standard IRL"], "fa_irl": COLORS["FA-IRL"]}
# (metric, column, scale, digits): rates and toxicities in percent.
COLUMNS = (
    ("tox_rate_bilstm", "toxic % (BiLSTM)", 100, 1),
    ("tox_mean_bilstm", "mean tox. % (BiLSTM)", 100, 1),
    ("tox_rate_profanity", "toxic % (r* scorer)", 100, 1),
    ("tox_mean_profanity", "mean tox. % (r* scorer)", 100, 1),
    ("kl_to_base", "KL to base (nats)", 1, 2),
    ("ppl_base", "perplexity (base)", 1, 1),
    ("length_mean", "length (tokens)", 1, 1),
    ("distinct_2", "distinct-2", 1, 3),
    ("repetition", "repetition", 1, 3),
)
PANELS = (("tox_rate_bilstm", "toxic rate, BiLSTM judge", "toxic samples (%)", 100),
          ("tox_rate_profanity", "toxic rate, r* scorer (profanity)", "toxic samples (%)", 100),
          ("kl", "KL to the base", "KL (nats per sample)", 1))
SMOOTH = 5  # running mean over this many steps in the figure


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


def table(cells: dict[str, list[TrialRun]]):
    import pandas as pd

    columns = ["reward source", "seeds"] + [column for _, column, _, _ in COLUMNS]
    rows, records = [], []
    for name, runs in cells.items():
        record = {"source": name, "n_seeds": len(runs),
                  "seeds": ",".join(run.tags.get("seed", "") for run in runs),
                  "run_ids": ",".join(run.run_id for run in runs)}
        cells_row = [source_label(name), str(len(runs))]
        for metric, _, scale, digits in COLUMNS:
            values = np.array(list(seed_values(runs, metric).values()), dtype=float)
            mean = float(values.mean()) if len(values) else math.nan
            std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            record.update({f"{metric}_mean": mean, f"{metric}_std": std})
            cells_row.append(fmt_mean_std(mean * scale, std * scale, digits))
        rows.append(cells_row)
        records.append(record)
    return columns, rows, pd.DataFrame(records)


def comparison_notes(cells: dict[str, list[TrialRun]]) -> str:
    """FA-IRL against standard IRL, paired by seed; and the rewards' own held-out quality."""
    lines = []
    fa, standard = cells.get("fa_irl"), cells.get("standard_irl")
    if fa and standard:
        lines.append("FA-IRL's reward against standard IRL's (same seeds, budget and "
                     "evaluation samples; negative = FA-IRL less toxic):")
        lines.append("")
        for metric, column, scale, digits in COLUMNS[:5]:
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
        try:
            frame = pd.read_csv(source.artifact(run, "curves.csv"))
        except (FileNotFoundError, pd.errors.EmptyDataError):
            continue
        frames.append(frame.assign(seed=int(run.tags["seed"])))
    return pd.concat(frames, ignore_index=True) if frames else None


def figure(source: StudyRuns, cells: dict[str, list[TrialRun]], out):
    import matplotlib.pyplot as plt

    figure_style()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.0 * len(PANELS), 3.9))
    drawn = 0
    for name, runs in cells.items():
        frame = curves(source, runs)
        if frame is None:
            continue
        drawn += 1
        for ax, (column, title, ylabel, scale) in zip(axes, PANELS):
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
    legend_above(fig, axes[0])
    return save_figure(fig, out, NAME)


def build(options: Options) -> Section:
    name, study_file = options.experiment(STUDY)
    if not (options.studies_dir / f"{STUDY}.yaml").is_file():
        # A studies folder without the re-RLHF study (e.g. a shrunk set of IRL studies):
        # nothing to look for, and nothing to ask the user to run.
        remove_outputs(options.out, NAME)
        return Section(TITLE, [], [], [], [], [], notes=(
            f"Skipped: {options.studies_dir} has no {STUDY}.yaml."))
    hint = f"fairl rerlhf run {study_file}" + (
        "" if options.uri == default_tracking_uri() else f" --tracking-uri {options.uri}")
    source = load_policy_runs(options.uri, name, study_file, hint)
    cells = by_source(source)
    remove_outputs(options.out, NAME)
    columns, rows, data = table(cells)
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
               f"BiLSTM judge and by r*'s scorer, KL to the base, perplexity under the base, "
               f"length, distinct-2 and repetition; mean ± std over up to {seeds} seeds.")
    files = write_table(options.out, NAME, columns, rows, caption, data)
    figures = figure(source, cells, options.out)
    section_figures = []
    if figures:
        section_figures = [(figures[0], (
            f"Toxicity over training: toxic rate of each RLHF step's own samples (training "
            f"prompts, {SMOOTH}-step running mean) by the BiLSTM judge and by r*'s scorer, and "
            f"the KL to the base; mean over seeds, band: min–max over seeds. Step 1 samples the "
            f"base itself (LoRA starts at zero)."))]
    used = [(run, f"{source_label(run.tags.get('source', '?'))}, seed {run.tags.get('seed')}")
            for run in source.runs]
    return Section(TITLE, section_figures, [(_markdown(columns, rows), caption)],
                   figures + files, used, [source], notes=comparison_notes(cells))


def _markdown(columns, rows) -> str:
    return markdown_table(columns, rows)


if __name__ == "__main__":
    script_main(NAME)
