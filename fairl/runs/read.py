"""Reading runs back: finished runs of a study (paged), artifacts as local files, heads.

Which runs (`load_study_runs`). In the study's experiment, the latest launch (parent run,
tag kind=launch) with at least one FINISHED trial names the Optuna study it ran (tags
optuna_study + optuna_storage). Every FINISHED trial run of that Optuna study is used, from
whichever launch ran it (a study resumed over several launches is whole), sorted by trial
number; runs of other Optuna studies logged to the same experiment (an older definition of
the study, another storage, another world) are left out. Runs of one table must be of one
world: trial runs tagged with two `world_hash` values (the world's content changed under the
same study, fairl.study.worlds) are refused (`MixedWorlds`); runs made before the tag existed
carry none and are taken as they are. Re-RLHF policy runs (`load_policy_runs`) are read the
same way, as the same `StudyRuns`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from fairl.config import ConfigError, parse_yaml
from fairl.paths import redact
from fairl.runs.store import client, default_tracking_uri

PAGE = 1000  # runs per search page (MLflow's SQL stores cap a page at 50 000)


@dataclasses.dataclass
class TrialRun:
    """One finished trial run: a configuration fitted on every seed of its study."""

    run_id: str
    name: str
    trial: int  # Optuna trial number; -1 for a run outside Optuna (a re-RLHF cell)
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str
    experiment_id: str
    status: str = "FINISHED"  # MLflow run status

    @property
    def method(self) -> str:
        """standard_irl, fa_irl, or the ablation the configuration is (FitConfig.method)."""
        return self.tags.get("method", "")

    @property
    def variant(self) -> str | None:
        value = self.params.get("variant", "null")
        return None if value in ("null", "None") else value

    @property
    def objective(self) -> str:
        return self.params.get("fit.objective", "")

    @property
    def seeds(self) -> list[int]:
        return [int(seed) for seed in self.tags.get("seed", "").split(",") if seed != ""]

    def param(self, key: str) -> Any:
        """A parameter as logged (JSON: numbers, booleans, null), or its raw string."""
        return param_value(self.params[key])

    def seed_values(self, metric: str) -> dict[int, float]:
        """{seed: value} of `metric` (e.g. test_f1) from the per-seed metrics seed_<s>/..."""
        return {seed: self.metrics[f"seed_{seed}/{metric}"] for seed in self.seeds
                if f"seed_{seed}/{metric}" in self.metrics}


@dataclasses.dataclass
class StudyRuns:
    """The finished trial runs of one study, and where they came from."""

    study: str  # study name = MLflow experiment name
    study_file: str  # e.g. studies/main_table.yaml (for messages)
    uri: str
    experiment_id: str
    launches: list[str]  # launch (parent) run ids the runs belong to
    runs: list[TrialRun]
    spec: dict[str, Any]  # the study file as the latest launch logged it (study.yaml)
    # metrics of that launch run: verdicts and reference_* (fairl.study.runner.conclude)
    launch_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    pruned: int = 0  # trial runs stopped early by the study's pruner (tag pruned_at_round)

    def artifact(self, run: TrialRun, path: str) -> Path:
        """Local path of artifact `path` of `run` (downloaded once if the store is remote)."""
        return artifact_path(self.uri, run.run_id, run.artifact_uri, path)

    def by_method_objective(self) -> dict[tuple[str, str], TrialRun]:
        """(method, objective) -> the latest run (highest trial number) of that configuration."""
        cells: dict[tuple[str, str], TrialRun] = {}
        for run in self.runs:  # sorted by trial number: later trials win
            cells[(run.method, run.objective)] = run
        return cells


class MissingStudy(Exception):
    """A study an item needs has no finished runs in the tracking store."""

    def __init__(self, study: str, study_file: str, uri: str, detail: str,
                 hint: str | None = None):
        self.study, self.study_file, self.uri, self.hint = study, study_file, uri, hint
        super().__init__(detail)

    @property
    def command(self) -> str:
        """What to run: `fairl study run studies/X.yaml` (or the hint, when rerunning is not it)."""
        if self.hint:
            return self.hint
        flag = "" if self.uri == default_tracking_uri() else f" --tracking-uri {self.uri}"
        return f"fairl study run {self.study_file}{flag}"


class MixedWorlds(ValueError):
    """A study's runs come from worlds of different content hashes: one table cannot hold them."""


def check_one_world(name: str, runs: list[TrialRun]) -> None:
    """MixedWorlds (one line) unless every run tagged with a world_hash carries the same one."""
    hashes: dict[str, int] = {}
    for run in runs:
        if "world_hash" in run.tags:
            hashes[run.tags["world_hash"]] = hashes.get(run.tags["world_hash"], 0) + 1
    if len(hashes) > 1:
        counted = ", ".join(f"{digest} ({count} run{'s' * (count != 1)})"
                            for digest, count in sorted(hashes.items()))
        raise MixedWorlds(f"refused: experiment {name!r} holds runs of {len(hashes)} different "
                          f"worlds (world_hash {counted}); one table takes one world: rerun the "
                          "study under a new name, or delete the other world's runs")


def param_value(text: str) -> Any:
    """A logged param: JSON (numbers, booleans, null) or, for strings, the raw text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def trial_run(run) -> TrialRun:
    return TrialRun(run_id=run.info.run_id, name=run.info.run_name or "",
                    trial=int(run.data.tags.get("trial_number", -1)),
                    start_time=int(run.info.start_time or 0), params=dict(run.data.params),
                    metrics=dict(run.data.metrics), tags=dict(run.data.tags),
                    artifact_uri=run.info.artifact_uri, experiment_id=run.info.experiment_id,
                    status=run.info.status)


def search(uri: str, experiment_id: str, filter_string: str,
           order_by: list[str] | None = None) -> list:
    """Every run of the experiment matching `filter_string`, page by page.

    The cyclic garbage collector is off while the pages load: a page of a SQL store is
    ~160 ORM objects a run, and the collections their allocation sets off took more than
    half of the time (1 000 trial runs here: 8.2 s with it, 3.8 s without)."""
    runs, token = [], None
    collecting = gc.isenabled()
    gc.disable()
    try:
        while True:
            page = client(uri).search_runs([experiment_id], filter_string, max_results=PAGE,
                                           order_by=order_by, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs
    finally:
        if collecting:
            gc.enable()


@functools.cache
def load_study_runs(uri: str, name: str, study_file: str) -> StudyRuns:
    """The finished trial runs of study `name` (see the module docstring); MissingStudy if none."""
    experiment = client(uri).get_experiment_by_name(name)
    if experiment is None:
        raise MissingStudy(name, study_file, uri, f"no MLflow experiment {name!r}")
    finished = [trial_run(run) for run in search(
        uri, experiment.experiment_id, "tags.kind = 'trial' and attributes.status = 'FINISHED'")]
    if not finished:
        raise MissingStudy(name, study_file, uri,
                           f"MLflow experiment {name!r} has no finished trial runs")
    parents = {run.tags.get("mlflow.parentRunId") for run in finished}
    launches = sorted((trial_run(run) for run in search(
        uri, experiment.experiment_id, "tags.kind = 'launch'") if run.info.run_id in parents),
        key=lambda launch: (launch.start_time, launch.run_id))
    spec: dict[str, Any] = {}
    launch_metrics: dict[str, float] = {}
    if launches:
        latest = launches[-1]
        launch_metrics = latest.metrics
        key = (latest.tags.get("optuna_study"), latest.tags.get("optuna_storage"))
        finished = [run for run in finished
                    if (run.tags.get("optuna_study"), run.tags.get("optuna_storage")) == key]
        try:
            spec = parse_yaml(artifact_path(uri, latest.run_id, latest.artifact_uri,
                                            "study.yaml").read_text(), "study.yaml") or {}
        except Exception:  # noqa: BLE001 (a launch without a readable study.yaml: no spec)
            spec = {}
    pruned = sum("pruned_at_round" in run.tags for run in finished)
    finished = [run for run in finished if "pruned_at_round" not in run.tags]
    if not finished:
        raise MissingStudy(name, study_file, uri, f"MLflow experiment {name!r} has only "
                           f"pruned trial runs ({pruned})")
    check_one_world(name, finished)
    used = {run.tags.get("mlflow.parentRunId") for run in finished}
    finished.sort(key=lambda run: (run.trial, run.start_time, run.run_id))
    return StudyRuns(study=name, study_file=study_file, uri=uri,
                     experiment_id=experiment.experiment_id,
                     launches=[launch.run_id for launch in launches if launch.run_id in used],
                     runs=finished, spec=spec, launch_metrics=launch_metrics, pruned=pruned)


def load_run(uri: str, run_id: str) -> StudyRuns:
    """One run by id (any experiment), as a StudyRuns holding just that run."""
    from mlflow.exceptions import MlflowException  # heavy: see fairl.runs.store.client

    try:
        run = client(uri).get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--run {run_id}: no such run in {redact(uri)}") from None
    experiment = client(uri).get_experiment(run.info.experiment_id)
    trial = trial_run(run)
    return StudyRuns(study=experiment.name, study_file=f"studies/{experiment.name}.yaml", uri=uri,
                     experiment_id=experiment.experiment_id,
                     launches=[trial.tags.get("mlflow.parentRunId", "")], runs=[trial], spec={})


def artifact_path(uri: str, run_id: str, artifact_uri: str, path: str) -> Path:
    """A run's artifact as a local file: read in place from a local store, else downloaded."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file") and not parsed.netloc:
        local = Path(unquote(parsed.path), path)
        if not local.exists():
            raise FileNotFoundError(f"run {run_id} has no artifact {path}")
        return local
    return Path(client(uri).download_artifacts(run_id, path, str(_download_dir())))


@functools.cache
def _download_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fairl-report-"))


def running_runs(uri: str, experiment: str) -> list:
    """Runs of `experiment` still marked RUNNING."""
    return search(uri, experiment, "attributes.status = 'RUNNING'")


def load_policy_runs(uri: str, name: str, study_file: str, hint: str | None = None,
                     fingerprint: str | None = None) -> StudyRuns:
    """The FINISHED re-RLHF policy runs of one configuration of the study, as StudyRuns.

    The configuration: `fingerprint` (tag `study_fingerprint`), else that of the most recently
    started FINISHED run; within it, the latest run of each (source, seed), whichever launch
    made it (or none: the grid loop before re-RLHF ran as a study). MissingStudy if none.
    """
    experiment = client(uri).get_experiment_by_name(name)
    if experiment is None:
        raise MissingStudy(name, study_file, uri, f"no MLflow experiment {name!r}", hint)
    runs = policy_runs(uri, experiment.experiment_id)
    fingerprint = fingerprint or (runs[-1].tags.get("study_fingerprint") if runs else None)
    cells = {}
    for run in runs:
        if run.tags.get("study_fingerprint") == fingerprint:
            cells[(run.tags.get("source"), run.tags.get("seed"))] = run
    if not cells:
        raise MissingStudy(name, study_file, uri, f"experiment {name!r} has no finished policy "
                           "runs" + (" of this configuration" if runs else ""), hint)
    chosen = sorted(cells.values(), key=lambda run: (run.start_time, run.run_id))
    launches = sorted({run.tags["mlflow.parentRunId"] for run in chosen
                       if "mlflow.parentRunId" in run.tags})
    return StudyRuns(study=name, study_file=study_file, uri=uri,
                     experiment_id=experiment.experiment_id, launches=launches, runs=chosen,
                     spec={})


def policy_runs(uri: str, experiment: str, status: str | None = "FINISHED"
                         ) -> list[TrialRun]:
    """Re-RLHF policy runs of `experiment` (of one status, or all), oldest first."""
    where = "tags.kind = 'policy'" + (f" and attributes.status = '{status}'" if status else "")
    return [trial_run(run) for run in search(uri, experiment, where,
                                             order_by=["attributes.start_time ASC"])]


def seeds_of(keys, name: str = "theta_D") -> list[int]:
    """The seeds of a per-seed .npz (keys `seed<s>/<name>`: rewards.npz, the reward model's)."""
    return sorted(int(key.split("/")[0].removeprefix("seed")) for key in keys
                  if key.endswith(f"/{name}"))


def heads_from_run(uri: str, run_id: str, seed: int) -> tuple[dict[str, np.ndarray], TrialRun]:
    """Seed `seed`'s heads (FitResult.heads() arrays) from a trial's rewards.npz, and the run.

    Raises ConfigError naming the seeds the file has when `seed` is not among them.
    """
    run = trial_run(client(uri).get_run(run_id))
    local = artifact_path(uri, run_id, run.artifact_uri, "rewards.npz")
    with np.load(local) as data:
        seeds = seeds_of(data.files)
        if seed not in seeds:
            raise ConfigError(f"run {run_id}: rewards.npz has seeds {seeds}, not {seed}; set "
                              "reward_seed")
        heads = {key: data[f"seed{seed}/{key}"] for key in ("theta_D", "theta_F", "biases")}
    return heads, run
