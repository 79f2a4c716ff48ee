"""`fairl study list|status`: done, running, failed and best trials of the stored studies."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from fairl.config import ConfigError
from fairl.paths import redact
from fairl.study.files import study_name
from fairl.study.storage import is_rdb, open_storage, resolve_storage, tally


def study_status(name_or_path: str, storage: str | None = None) -> str:
    """Done, running, failed and best trial(s) of one study, as text."""
    return _describe_study(_load(name_or_path, storage), detail=True)


def best_trial_run(name_or_path: str, storage: str | None = None) -> dict:
    """The best COMPLETE trial (the first of the Pareto front): number, values, MLflow run."""
    study_obj = _load(name_or_path, storage)
    if not any(t.state == TrialState.COMPLETE for t in study_obj.get_trials(deepcopy=False)):
        raise ConfigError(f"study {study_obj.study_name!r}: no complete trial yet")
    best = study_obj.best_trials[0]
    metrics = study_obj.user_attrs.get("fairl_metrics") or [
        f"value{i}" for i in range(len(best.values))]
    # A re-RLHF grid's trial is a policy (its cell: source x seed), not a reward model;
    # its params are exactly those two (fairl.study.rerlhf), in any store, old or new.
    cell = {"source", "seed"} == set(best.params)
    return {"study": study_obj.study_name, "number": best.number,
            "values": ", ".join(f"{m}={v:.4f}" for m, v in zip(metrics, best.values)),
            "run_id": best.user_attrs.get("mlflow_run_id"),
            "cell": (best.params["source"], best.params["seed"]) if cell else None}


def _load(name_or_path: str, storage: str | None):
    name = name_or_path
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        name = study_name(name_or_path)
    storage = resolve_storage(storage)
    if not is_rdb(storage) and not Path(storage).exists():
        raise ConfigError(f"study {name!r}: no study storage at {storage} yet (run a study)")
    try:
        study_obj = optuna.load_study(study_name=name, storage=open_storage(storage, name))
    except KeyError:
        raise ConfigError(f"study {name!r}: not found in {redact(storage)} "
                          "(fairl study list shows what is there)") from None
    return study_obj


def list_studies(storage: str | None = None) -> str:
    """One line per study in the storage."""
    storage = resolve_storage(storage)
    if not is_rdb(storage) and not Path(storage).exists():
        return f"no studies in {storage} yet"
    storage_obj = open_storage(storage)
    names = optuna.get_all_study_names(storage=storage_obj)
    if not names:
        return f"no studies in {redact(storage)} yet"
    return "\n".join(_describe_study(optuna.load_study(study_name=name, storage=storage_obj))
                     for name in names)


def _describe_study(study_obj, detail: bool = False) -> str:
    trials = study_obj.get_trials(deepcopy=False)
    counts = tally(trials)
    target = study_obj.user_attrs.get("fairl_target", "?")
    metrics = study_obj.user_attrs.get("fairl_metrics") or [
        f"value{i}" for i in range(len(study_obj.directions))]
    line = (f"{study_obj.study_name}: {counts.done}/{target} done ({counts.complete} complete, "
            f"{counts.failed} failed{f', {counts.pruned} pruned' if counts.pruned else ''}), "
            f"{counts.running} running, {counts.waiting} waiting, "
            f"{counts.requeued} killed and re-queued")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study_obj.best_trials
        values = ", ".join(f"{m}={v:.4f}" for m, v in zip(metrics, best[0].values))
        line += f"; best: trial {best[0].number} {values}"
    if not detail:
        return line
    lines = [line]
    for trial in (study_obj.best_trials if complete else []):
        values = ", ".join(f"{m}={v:.4f}" for m, v in zip(metrics, trial.values))
        lines.append(f"  best trial {trial.number}: {values}  params={trial.params}  "
                     f"mlflow_run_id={trial.user_attrs.get('mlflow_run_id')}")
    for trial in trials:
        if trial.state == TrialState.FAIL:
            reason = (trial.user_attrs.get("fairl_killed") or trial.user_attrs.get("fail_reason")
                      or ("interrupted" if trial.user_attrs.get("fairl_interrupted") else "?"))
            lines.append(f"  failed trial {trial.number}: {reason[:300]}")
    return "\n".join(lines)
