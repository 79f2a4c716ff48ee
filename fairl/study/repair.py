"""`fairl study repair`: a journal with a torn record made whole, and its dead trials re-queued.

The journal is backed up and its torn or unreadable records are removed (fairl.study.journal);
then, as at a launch, trials whose worker is gone are failed and re-queued with their MLflow
runs KILLED (made if missing), and runs left RUNNING by them are set KILLED.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from fairl.config import ConfigError
from fairl.paths import redact
from fairl.runs.reap import reap_runs
from fairl.runs.store import resolve_tracking_uri
from fairl.study.files import study_name
from fairl.study.journal import repair_journal
from fairl.study.links import run_killer
from fairl.study.storage import StudyLock, is_rdb, open_storage, reap_trials, resolve_storage, tally


def repair_study(name_or_path: str, storage: str | None = None,
                 tracking_uri: str | None = None) -> list[str]:
    """Repair the journal of study `name_or_path` (a name or study file); what was done."""
    name = name_or_path
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        name = study_name(name_or_path)
    storage = resolve_storage(storage)
    messages = [] if is_rdb(storage) else repair_journal(storage)
    try:
        study_obj = optuna.load_study(study_name=name, storage=open_storage(storage, name))
    except KeyError:
        raise ConfigError(f"study {name!r}: not found in {redact(storage)} "
                          "(fairl study list shows what is there)") from None
    uri = resolve_tracking_uri(tracking_uri)
    experiment = study_obj.user_attrs.get("mlflow_experiment_id")
    on_killed = (run_killer(uri, experiment, None, name, storage, {}) if experiment else None)
    lock = StudyLock(storage, name)
    try:
        with lock:
            messages += reap_trials(study_obj, on_killed)
            states = {trial.number: (trial.state.name, trial.user_attrs.get("fairl_killed"))
                      for trial in study_obj.get_trials(deepcopy=False)}
            if experiment:
                messages += reap_runs(uri, experiment, states)
    finally:
        lock.close()
    counts = tally(study_obj.get_trials(deepcopy=False))
    target = study_obj.user_attrs.get("fairl_target", "?")
    messages.append(f"{name}: {counts.done}/{target} done, {counts.running} running, "
                    f"{counts.waiting} waiting; rerun `fairl study run` to continue")
    return messages
