"""Reward distributions of aligned vs base held-out outputs: standard IRL, FA-IRL, ground truth.

From each run's rewards.npz (R of every held-out output, per seed, and r*): one row per
objective, columns standard IRL / FA-IRL / r*. Each reward is z-scored over the outputs
(IRL rewards are identified only up to scale and shift), so the panels share an axis; the
ROC-AUC of separating aligned from base outputs is printed in each panel. Study: main_table.
"""

from __future__ import annotations

import numpy as np

from analysis.common import figure_style, objective_label, save_figure, script_main, study_data
from analysis.main_table import method_pairs
from fairl.report import Options, Section
from fairl.runs.read import MissingStudy, StudyRuns, TrialRun

NAME = "reward_distributions"
STUDY = "main_table"
TITLE = "Reward distributions: aligned vs base outputs"
ALIGNED, BASE = "#55a868", "#c44e52"


def test_rewards(source: StudyRuns, run: TrialRun, seed: int) -> dict[str, np.ndarray]:
    """R_T, R_NT (and gt_T, gt_NT when logged) of the held-out outputs for one seed."""
    with np.load(source.artifact(run, "rewards.npz")) as data:
        values = {"R_T": data[f"seed{seed}/test_R_T"], "R_NT": data[f"seed{seed}/test_R_NT"]}
        if "test_gt_T" in data:
            values.update(gt_T=data["test_gt_T"], gt_NT=data["test_gt_NT"])
    return values


def auc(aligned: np.ndarray, base: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(aligned)), np.zeros(len(base))]
    return float(roc_auc_score(labels, np.r_[aligned, base]))


def zscore(aligned: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.r_[aligned, base].astype(np.float64)
    scale = both.std() or 1.0
    return (aligned - both.mean()) / scale, (base - both.mean()) / scale


def reward_panels(source, rows, seed: int) -> list[list[tuple]]:
    """Per objective: (title, aligned rewards, base rewards) of each method and of r*."""
    panels = []  # per row: [(title, aligned, base)]
    try:
        for objective, standard, fa in rows:
            row = []
            for label, run in (("standard IRL", standard), ("FA-IRL", fa)):
                values = test_rewards(source, run, seed)
                row.append((f"{label}, {objective_label(objective)}", values["R_T"],
                            values["R_NT"]))
            if "gt_T" in values:
                row.append(("ground truth r*", values["gt_T"], values["gt_NT"]))
            panels.append(row)
    except FileNotFoundError:
        raise MissingStudy(
            source.study, source.study_file, source.uri,
            "its runs predate the rewards.npz artifact",
            f"fairl study run {source.study_file} with a fresh --tracking-uri and --storage "
            "(a finished study does not rerun)") from None
    return panels


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt
    import seaborn as sns

    source, rows = study_data(options, NAME, STUDY, method_pairs,
                              "no objective has both a standard IRL and an FA-IRL run")
    seed = min(set(rows[0][1].seeds) & set(rows[0][2].seeds))
    panels = reward_panels(source, rows, seed)
    figure_style()
    columns = max(len(row) for row in panels)
    fig, axes = plt.subplots(len(panels), columns, figsize=(4.3 * columns, 3.3 * len(panels)),
                             sharex=True, squeeze=False)
    scored = [[(title, *zscore(aligned, base), auc(aligned, base))
               for title, aligned, base in row] for row in panels]
    every = np.concatenate([np.r_[a, b] for row in scored for _, a, b, _ in row])
    low, high = np.quantile(every, [0.001, 0.999])  # shared axis; outliers go to the edge bins
    bins = np.linspace(low, high, 41)
    for row, axes_row in zip(scored, axes):
        for (title, z_aligned, z_base, area), ax in zip(row, axes_row):
            for values, color, label in ((z_aligned, ALIGNED, "aligned output $o_T$"),
                                         (z_base, BASE, "base output $o_{NT}$")):
                sns.histplot(np.clip(values, low, high), bins=bins, stat="density",
                             element="step", color=color, alpha=0.3, label=label, ax=ax)
            ax.set_title(title)
            ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # headroom for the AUC box
            ax.text(0.97, 0.95, f"ROC-AUC {area:.3f}", transform=ax.transAxes,
                    va="top", ha="right", fontsize="small",
                    bbox={"boxstyle": "round", "fc": "white", "ec": "0.8"})
            ax.set_ylabel("density (per std unit)" if ax is axes_row[0] else "")
        for ax in axes_row[len(row):]:
            ax.remove()
    for ax in axes[-1]:
        ax.set_xlabel("reward, z-scored (std units)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    files = save_figure(fig, options.out, NAME)
    n = len(panels[0][0][1])
    caption = (f"Rewards of the {n} aligned and {n} base held-out outputs (seed {seed}), "
               f"z-scored per panel: standard IRL and FA-IRL against the ground truth r*; "
               f"ROC-AUC = how well each reward separates aligned from base outputs.")
    used = []
    for objective, standard, fa in rows:
        used += [(standard, f"standard IRL, {objective_label(objective)}, seed {seed}"),
                 (fa, f"FA-IRL, {objective_label(objective)}, seed {seed}")]
    used.sort(key=lambda item: item[0].trial)
    return Section(TITLE, [(files[0], caption)], [], files, used, [source])


if __name__ == "__main__":
    script_main(NAME)
