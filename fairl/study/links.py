"""Trial <-> run links: store checks before a launch, and a KILLED run for every killed trial.

Before a launch touches either store, `check_stores` makes sure the journal and the MLflow
store still belong together, so that an emptied, replaced or damaged store is an error
naming the file, never a silent new study or trials pointing at runs that do not exist:
* the journal reads whole (no torn record) and its directory takes a lock (writable);
* the MLflow store opens (not half-made) and passes SQLite's quick_check;
* every COMPLETE trial's `mlflow_run_id` is a run of the study's experiment, every FINISHED
  trial run names a trial of the journal, and a study missing from the journal has no runs
  (a re-RLHF trial's run is a policy run; it may be one of another storage or of the grid
  loop before re-RLHF was a study, which the trial completed from by its config hash).
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from fairl.outage import StoreUnreachable
from fairl.paths import StoreError, redact
from fairl.runs import write as runs
from fairl.runs.read import search
from fairl.runs.store import check_store, client
from fairl.study.storage import StudyLock, is_rdb, open_storage


def check_stores(name: str, storage: str, uri: str) -> None:
    """StoreError (or OSError for a read-only or full directory) unless both stores are sound."""
    check_store(uri)  # a damaged db is named before MLflow reads it
    experiment = client(uri).get_experiment_by_name(name)  # a half-made db is refused here
    trial_runs = _trial_runs(uri, experiment.experiment_id) if experiment else []
    lock = StudyLock(storage, name)  # a read-only journal directory fails here, before any write
    try:
        lock.acquire()
    finally:
        lock.close()
    trials = None
    if is_rdb(storage) or Path(storage).exists():
        storage_obj = open_storage(storage, name)  # a torn journal is refused here
        try:
            trials = optuna.load_study(study_name=name, storage=storage_obj).get_trials(
                deepcopy=False)
        except KeyError:
            pass
    _check_links(name, storage, uri, trials, trial_runs)


def _trial_runs(uri: str, experiment: str, study: str | None = None, condition: str = "") -> list:
    """The runs of an experiment that trials make: IRL trial runs, re-RLHF policy runs; with
    `study`, only that Optuna study's, matching the MLflow filter `condition` too (appended to
    the kind's, e.g. " and tags.trial_number = '3'")."""
    return [run for kind in ("trial", "policy")
            for run in search(uri, experiment, f"tags.kind = '{kind}'{condition}")
            if study is None or run.data.tags.get("optuna_study") == study]


def _check_links(name: str, storage: str, uri: str, trials, found) -> None:
    where = storage if is_rdb(storage) else Path(storage)
    db = uri.removeprefix("sqlite:///")
    trial_runs = [run for run in found if run.data.tags.get("optuna_storage") == redact(storage)]
    if trials is None:
        if trial_runs:
            empty = not is_rdb(storage) and Path(storage).stat().st_size == 0
            raise StoreError(
                f"{redact(str(where))}: {'is empty' if empty else f'has no study {name!r}'}, but "
                f"MLflow store {redact(db)} holds {len(trial_runs)} trial runs of it from this "
                "storage: the journal was emptied or replaced; restore it from a backup (or "
                "give the study a new `name:`)")
        return
    run_ids = {run.info.run_id for run in trial_runs} | {
        run.info.run_id for run in found if run.data.tags.get("kind") == "policy"}
    lost = [t for t in trials if t.state == TrialState.COMPLETE
            and t.user_attrs.get("mlflow_run_id") not in run_ids]
    if lost:
        raise StoreError(
            f"{redact(db)}: has no run of {len(lost)} of the complete trials of study {name!r} "
            f"(e.g. trial {lost[0].number} -> run {lost[0].user_attrs.get('mlflow_run_id')}): "
            "the MLflow store was emptied or replaced; restore it from a backup (or give the "
            "study a new `name:`)")
    numbers = {t.number for t in trials}
    strays = [run for run in trial_runs if run.info.status == runs.FINISHED
              and int(run.data.tags.get("trial_number", -1)) not in numbers]
    if strays:
        raise StoreError(
            f"{redact(str(where))}: lacks trials that MLflow store {redact(db)} has finished "
            f"runs of (e.g. trial {strays[0].data.tags.get('trial_number')}): the journal was "
            "replaced or cut short; restore it from a backup")


def run_killer(uri: str, experiment: str, launch_run: str | None, study: str, storage: str,
               tags: dict[str, str]):
    """`on_killed(trial, reason)` for reap_trials: the trial's run (made if it has none)
    KILLED; with the MLflow server away, left for a later reap (fairl.runs.reap)."""
    def on_killed(trial, reason: str) -> str | None:
        try:
            return _kill(trial, reason)
        except StoreUnreachable:  # the trial is re-queued all the same; a later reap
            return trial.user_attrs.get("mlflow_run_id")  # (reap_runs) KILLs its run

    def _kill(trial, reason: str) -> str:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if trial.user_attrs.get("reused_run"):  # a re-RLHF cell's earlier FINISHED run: kept
            return run_id
        if run_id is None:  # the worker died before starting it, or before linking it
            found = _trial_runs(uri, experiment, study,
                                f" and tags.trial_number = '{trial.number}'")
            run_id = found[0].info.run_id if found else _killed_run_for(
                trial, uri, experiment, launch_run, study, storage, tags)
        runs.kill_run(uri, run_id, f"{reason}; re-queued")
        return run_id

    return on_killed


def kill_runless(uri: str, experiment: str, launch_run: str | None, study: str, storage: str,
                 tags: dict[str, str], trials) -> list[str]:
    """A KILLED run for every trial a reap failed and re-queued before it had a run (the
    tracking server was away then, so none could be made; Optuna keeps a finished trial's
    attrs as they were, so this looks the runs up by trial number once per launch)."""
    runless = [trial for trial in trials if trial.state == TrialState.FAIL
               and "fairl_killed" in trial.user_attrs and "mlflow_run_id" not in trial.user_attrs]
    if not runless:
        return []
    found = {run.data.tags.get("trial_number") for run in _trial_runs(uri, experiment, study)}
    messages = []
    for trial in runless:
        if str(trial.number) not in found:
            run_id = _killed_run_for(trial, uri, experiment, launch_run, study, storage, tags)
            runs.kill_run(uri, run_id, f"{trial.user_attrs['fairl_killed']}; re-queued")
            messages.append(f"run {run_id}: trial {trial.number} had none; set KILLED")
    return messages


def _killed_run_for(trial, uri: str, experiment: str, launch_run: str | None, study: str,
                    storage: str, tags: dict[str, str]) -> str:
    """A run for a trial that has none (it is KILLED by the caller)."""
    return runs.start_run(
        uri, experiment, f"trial-{trial.number:04d}",
        {**tags, "kind": "trial", "study": study, "optuna_study": study,
         "optuna_storage": redact(storage), "trial_number": str(trial.number),
         "optuna_trial_id": str(trial._trial_id),
         "worker": trial.user_attrs.get("worker") or "unknown"},
        parent_run_id=launch_run)
