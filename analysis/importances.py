"""Optuna parameter importances of the FA-IRL hyperparameter sweep (fANOVA).

The sweep's trials are rebuilt from the MLflow runs (each run's searched parameters, with
the search space of the study file the launch logged, and its mean-over-seeds metrics) as an
in-memory Optuna study, so no Optuna storage is needed and exactly the reported runs count.
Importance = fANOVA's share of the variance of the target over the search space (seeded
random forest: the same runs give the same numbers), for test F1 (the sweep's objective)
and STARC. Study: fa_sweep.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from analysis.common import (
    METRIC_NAMES,
    figure_style,
    save_figure,
    script_main,
    selection_note,
    study_data,
)
from fairl.report import Options, Section
from fairl.runs.read import StudyRuns, TrialRun

NAME = "importances"
STUDY = "fa_sweep"
TITLE = "Hyperparameter importances of the FA-IRL sweep"
TARGETS = ("test_f1", "test_starc")
PARAMS = {"M_fail": r"$M_{fail}$ (failure margin)", "tau_fail": r"$\tau_{fail}$ (failure temp.)",
          "lambda0": r"$\lambda_0$ (failure weight)", "lambda_decay": r"$\lambda$ decay rate",
          "gamma_shape": r"$\gamma_t$ schedule shape", "gamma_end": r"final threshold $\gamma_T$",
          "gamma_start": r"initial threshold $\gamma_0$", "p0": r"initial sampling rate $p_0$",
          "objective": "base objective", "lr": "learning rate", "variant": "variant"}


def run_param(key: str) -> str:
    """MLflow parameter name of search key `key` (FitConfig fields are logged as fit.<key>)."""
    return key if key == "variant" or key.startswith("world.") else f"fit.{key}"


def distributions(source: StudyRuns) -> dict:
    """Optuna distributions of the study's search space (from the logged study.yaml)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    found = {}
    for key, param in (source.spec.get("search") or {}).items():
        if isinstance(param, list):
            found[key] = CategoricalDistribution(param)
        elif param.get("type") == "categorical":
            found[key] = CategoricalDistribution(param["choices"])
        elif param.get("type") == "int":
            found[key] = IntDistribution(param["low"], param["high"], log=param.get("log", False),
                                         step=param.get("step", 1))
        else:
            found[key] = FloatDistribution(float(param["low"]), float(param["high"]),
                                           log=param.get("log", False), step=param.get("step"))
    if source.spec.get("variants") and "variant" not in found:
        found["variant"] = CategoricalDistribution(list(source.spec["variants"]))
    return found


def trial_params(run: TrialRun, space: dict) -> dict | None:
    """The searched values of a run, or None if it lacks one."""
    values = {}
    for key in space:
        name = run_param(key)
        if name not in run.params:
            return None
        try:
            values[key] = json.loads(run.params[name])
        except ValueError:
            values[key] = run.params[name]
    return values


def rebuilt_study(source: StudyRuns):
    """An in-memory Optuna study holding one COMPLETE trial per finished run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = distributions(source)
    objectives = source.spec.get("objectives") or [{"metric": "test_f1"}]
    metric = objectives[0]["metric"]
    direction = objectives[0].get("direction") or (
        "minimize" if metric.endswith("starc") else "maximize")
    study = optuna.create_study(direction=direction)
    for run in source.runs:
        params = trial_params(run, space)
        if params is None or not all(math.isfinite(run.metrics.get(t, math.nan))
                                     for t in (metric, *TARGETS)):
            continue
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=space, value=run.metrics[metric],
            user_attrs={"run_id": run.run_id, **{t: run.metrics[t] for t in TARGETS}}))
    return study, space


def fanova_study(source: StudyRuns) -> tuple:
    """rebuilt_study's (study, space) when fANOVA can run on it (a space, >= 2 trials); else ()."""
    study, space = rebuilt_study(source)
    return (study, space) if space and len(study.get_trials(deepcopy=False)) >= 2 else ()


def build(options: Options) -> Section:
    import matplotlib.pyplot as plt
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    source, (study, space) = study_data(options, NAME, STUDY, fanova_study,
                                        "importances need a search space and >= 2 finished "
                                        "trials")
    trials = study.get_trials(deepcopy=False)
    rows = []
    for target in TARGETS:
        scores = get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0),
            target=lambda trial, target=target: trial.user_attrs[target])
        rows += [{"target": target, "param": key, "importance": value}
                 for key, value in scores.items()]
    data = pd.DataFrame(rows).sort_values(["target", "importance", "param"],
                                          ascending=[True, False, True], ignore_index=True)
    folder = options.out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{NAME}.csv"
    data.to_csv(csv, index=False, lineterminator="\n")

    figure_style()
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(5.6 * len(TARGETS), 0.45 * len(space) + 1.8),
                             sharey=True)
    order = (data[data["target"] == TARGETS[0]].sort_values("importance")["param"].tolist())
    for target, ax in zip(TARGETS, axes):
        part = data[data["target"] == target].set_index("param").reindex(order)
        ax.barh([PARAMS.get(p, p) for p in order], part["importance"] * 100, color="#dd8452")
        for y, value in enumerate(part["importance"] * 100):
            ax.text(value + 0.5, y, f"{value:.0f} %", va="center", fontsize="small")
        ax.set_xlim(0, max(100.0, (part["importance"] * 100).max() + 12))
        ax.set_xlabel("fANOVA importance (% of the total)")
        ax.set_title(f"{METRIC_NAMES[target]} (mean over seeds)")
    fig.tight_layout()
    files = save_figure(fig, options.out, NAME)
    caption = (f"{selection_note(source)} fANOVA importance of each searched FA-IRL hyperparameter for held-out F1 and "
               f"STARC over the {len(trials)} trials of the sweep (FA-IRL, both objectives).")
    used_ids = {trial.user_attrs["run_id"] for trial in trials}
    used = [(run, "sweep trial") for run in source.runs if run.run_id in used_ids]
    return Section(TITLE, [(files[0], caption)], [], files + [csv], used, [source])


if __name__ == "__main__":
    script_main(NAME)
