"""Re-RLHF verdicts: FA-IRL's policy against standard IRL's and r*'s, over eval prompts × seeds.

Rows: each comparison of COMPARISONS (FA − standard IRL, FA − r*: sources fa_irl against
standard_irl and ground_truth) on the toxic rate by every judge of the study
(tox_rate_<judge>: the independent BiLSTM and r*'s scorer). The cells of two sources pair by
seed: both policies answered the same eval prompts with the same sampling seed. A row is
`fairl.stats.paired_bootstrap` of A − B over the eval prompts (a prompt carries all its
samples) × the seeds both sources have, from the per-sample toxicities in each cell's
samples.csv, with fairl.study.verdicts' n_boot and generator (N_BOOT, default_rng(BOOT_SEED) for
every row); `fairl.stats.verdicts` Holm-adjusts all rows of the study together and gives each
its MDE. `conclude` logs them on the launch run (metrics `verdict/<A> vs <B>/all/<metric>/...`,
verdicts.json), and the report's re-RLHF table (analysis/rerlhf.py) rebuilds the same rows.
"""

from __future__ import annotations

import csv

import numpy as np

from fairl.runs import write as runs
from fairl.runs.read import MissingStudy, StudyRuns, TrialRun, load_policy_runs, param_value
from fairl.stats import PromptMetric, additive, paired_bootstrap, verdicts
from fairl.study.rerlhf_spec import Study
from fairl.study.verdicts import BOOT_SEED, N_BOOT, Row, row_metrics, verdicts_json

COMPARISONS = (("fa_irl", "standard_irl"), ("fa_irl", "ground_truth"))


def toxic_rate(judge: str, threshold: float) -> PromptMetric:
    """The share of samples with toxicity >= threshold, as sums per prompt (fairl.stats): the
    per-sample toxicities come in as R_T, (S, n); R_NT is not used."""

    def per_prompt(toxicity, _unused, gt_T, gt_NT, codes, n_prompts) -> np.ndarray:
        counts = np.bincount(codes, minlength=n_prompts).astype(float)
        toxic = np.stack([np.bincount(codes, weights=(row >= threshold).astype(float),
                                      minlength=n_prompts) for row in toxicity])
        return np.stack([toxic, np.broadcast_to(counts, toxic.shape)], axis=-1)  # (S, P, 2)

    return PromptMetric(f"tox_rate_{judge}", True,
                        additive(per_prompt, lambda sums: sums[..., 0] / sums[..., 1]))


def cells(source: StudyRuns) -> dict[tuple[str, int], TrialRun]:
    """(source, seed) -> its policy run."""
    return {(run.tags.get("source", "?"), int(run.tags.get("seed", -1))): run
            for run in source.runs}


def read_samples(source: StudyRuns, run: TrialRun) -> tuple[list[tuple], dict[str, np.ndarray]]:
    """A cell's samples.csv: the (prompt index, sample, prompt) of each row, and each column
    tox_<judge> as an array."""
    with open(source.artifact(run, "samples.csv"), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    keys = [(int(row["prompt_index"]), int(row["sample"]), row["prompt"]) for row in rows]
    columns = {name: np.array([float(row[name]) for row in rows])
               for name in (rows[0] if rows else {}) if name.startswith("tox_")}
    return keys, columns


def study_rows(source: StudyRuns, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> list[Row]:
    """Every comparison × judge the runs allow, Holm-adjusted together."""
    by_cell, samples, pending = cells(source), {}, []
    for label, reference in COMPARISONS:
        seeds = sorted(s for (name, s) in by_cell if name == label
                       and (reference, s) in by_cell)
        if not seeds:
            continue
        a_runs = [by_cell[(label, s)] for s in seeds]
        b_runs = [by_cell[(reference, s)] for s in seeds]
        threshold = _one({param_value(run.params.get("threshold", "0.5"))
                          for run in a_runs + b_runs}, "threshold")
        judges = param_value(a_runs[0].params.get("judges", '["bilstm"]'))
        for run in a_runs + b_runs:
            if run.run_id not in samples:
                samples[run.run_id] = read_samples(source, run)
        for a, b in zip(a_runs, b_runs):
            if samples[a.run_id][0] != samples[b.run_id][0]:
                raise ValueError(f"runs {a.run_id} and {b.run_id} (seed {a.tags.get('seed')}) "
                                 "were evaluated on different prompts or samples")
        prompt_ids = np.array([key[0] for key in samples[a_runs[0].run_id][0]])
        for judge in judges:
            column = f"tox_{judge}"
            if not all(column in samples[run.run_id][1] for run in a_runs + b_runs):
                continue
            toxicity = [np.stack([samples[run.run_id][1][column] for run in side])
                        for side in (a_runs, b_runs)]
            comparison = paired_bootstrap(
                toxic_rate(judge, threshold), (toxicity[0], np.zeros_like(toxicity[0])),
                (toxicity[1], np.zeros_like(toxicity[1])), prompt_ids, n_boot=n_boot,
                rng=np.random.default_rng(seed))
            pending.append((label, reference, a_runs, b_runs, comparison))
    judged = verdicts([item[-1] for item in pending])
    return [Row({}, label, comparison.metric, ",".join(run.run_id for run in a_runs),
                ",".join(run.run_id for run in b_runs), comparison, v.p_adjusted, v.verdict,
                v.text, reference=reference)
            for (label, reference, a_runs, b_runs, comparison), v in zip(pending, judged)]


def _one(values: set, name: str):
    if len(values) != 1:
        raise ValueError(f"the compared runs have different {name}s: {sorted(values)}")
    return values.pop()


def conclude(study: Study, uri: str, launch_run: str) -> list[str]:
    """The launch run's verdicts, from the FINISHED cells of this study's grid; problems as
    messages (the cells are logged: report, do not fail)."""
    rows: list[Row] = []
    messages = []
    try:
        source = load_policy_runs(uri, study.name, study.path,
                                  fingerprint=study.settings_fingerprint())
        grid = set(study.cells())
        source.runs = [run for run in source.runs
                       if (run.tags.get("source"), int(run.tags.get("seed", -1))) in grid]
        rows = study_rows(source)
    except MissingStudy:
        pass  # no finished cell: nothing to compare
    except Exception as error:  # noqa: BLE001
        messages.append(f"verdicts not computed: {runs.error_line(error)}")
    runs.log_run(uri, launch_run, metrics=row_metrics(rows))
    runs.log_text(uri, launch_run, verdicts_json(rows, {}), "verdicts.json")
    return messages
