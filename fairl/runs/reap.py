"""Reaping: MLflow runs left RUNNING by a dead worker or launcher are set KILLED, saying why."""

from __future__ import annotations

from collections.abc import Mapping

from fairl.runs.provenance import worker_alive
from fairl.runs.read import running_runs
from fairl.runs.write import kill_run


def reap_runs(uri: str, experiment: str,
              trials: Mapping[int, tuple[str, str | None]] | None = None) -> list[str]:
    """Set KILLED the runs of `experiment` whose process or Optuna trial is gone.

    * launch runs (tag kind=launch) whose launcher process died;
    * trial runs (kind=trial, and re-RLHF policy runs of a trial) whose Optuna trial is not
      RUNNING: `trials` maps trial number -> (state name, reason or None), a number missing
      from it is a trial that does not exist;
    * re-RLHF policy runs of no trial (the grid loop before re-RLHF ran as a study) whose
      process died.
    Runs of other kinds (not fairl's) are left alone. Returns one message per run reaped.
    """
    messages = []
    for run in running_runs(uri, experiment):
        tags = run.data.tags
        kind = tags.get("kind")
        if kind == "launch" or (kind == "policy" and "trial_number" not in tags):
            if worker_alive(tags.get("worker")) is not False:
                continue
            reason = (f"launcher {tags.get('worker')} died" if kind == "launch"
                      else "its process died; rerun to resume")
        elif kind in ("trial", "policy") and trials is not None:
            number = int(tags.get("trial_number", -1))
            state, why = trials.get(number, ("missing", None))
            if state == "RUNNING":
                continue
            reason = f"orphaned: Optuna trial {number} is {state}" + (f" ({why})" if why else "")
        else:
            continue  # not a fairl run (or no trial states to judge it by): leave it alone
        kill_run(uri, run.info.run_id, reason)
        messages.append(f"run {run.info.run_id}: {reason}; set KILLED")
    return messages
