"""Batched trials (fairl.study.batch): K trials in one pass, each told only when its run is whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from study_support import runs_of, trial_runs, use_store, write_study

from fairl.runs import store as runs_store
from fairl.runs import write
from fairl.study.batch import batch_size
from fairl.study.runner import run_study
from fairl.study.spec import load_study, resolve
from fairl.study.storage import open_storage, resolve_storage
from fairl.study.trial import evaluate

WORLD = {"name": "planted", "options": {"n_train": 400, "n_test": 200, "n_val": 200, "d": 8,
                                        "label_noise": 0.05, "seed": 0}}


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())


def _trials(name: str):
    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage())).trials


def test_the_last_trials_are_shared_out_among_the_workers():
    """Full batches while enough trials are left, then each worker's share, re-queued trials
    whatever the count; nothing once none is left or waiting."""
    assert batch_size(32, 1000, 0, 2) == 32
    assert batch_size(32, 40, 0, 2) == 20 and batch_size(32, 20, 0, 2) == 10
    assert batch_size(32, 1, 0, 2) == 1 and batch_size(32, 40, 0, 1) == 32
    assert batch_size(32, 5, 0, 3) == 2
    assert batch_size(32, 0, 3, 2) == 3 and batch_size(32, -2, 40, 2) == 32  # the re-queued
    assert batch_size(32, 0, 0, 2) <= 0 and batch_size(32, -1, 0, 2) <= 0


def test_a_batched_study_logs_every_trial_whole_with_its_unbatched_numbers(store, tmp_path):
    """5 trials in batches of 3 and 2: every run FINISHED with its artifacts and reward model,
    tagged fit_batch, each trial's metrics those of its unbatched evaluation."""
    path = write_study(tmp_path, "batched", world=WORLD, fit={"rounds": 15},
                       search={"lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
                               "objective": ["max_margin", "max_entropy"]},
                       sampler={"type": "tpe", "seed": 0}, trials=5, seeds=[0, 1], batch=3)
    report = run_study(path, progress=False)
    assert report.status == write.FINISHED and report.tally.complete == 5
    trials = _trials("batched")
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 5
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == 5  # constant liar
    uri = runs_store.default_tracking_uri()
    runs = {int(run.data.tags["trial_number"]): run for run in trial_runs(uri, "batched")}
    assert sorted(runs) == list(range(5))
    client = runs_store.client(uri)
    study = load_study(path)
    for trial in trials:
        run = runs[trial.number]
        assert run.info.status == write.FINISHED
        assert run.data.tags["fit_batch"] == ("3" if trial.number < 3 else "2")
        names = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "history.csv", "failures.csv", "rewards.npz"} <= names
        assert "reward_model_uri" in run.data.tags
        metrics = evaluate(resolve(study.spec, trial.params))[0]
        for key in ("val_f1", "val_pairwise_accuracy", "test_starc"):
            assert run.data.metrics[key] == pytest.approx(metrics[key], abs=2e-3), key
        assert trial.value == pytest.approx(metrics["val_f1"], abs=2e-3)


def test_a_pruned_trial_of_a_batch_does_not_stop_the_others(store, tmp_path):
    """The grid (seed 4) runs lr 0.01, 0.02 first (a launch of 2), then 1e-7 and 0.06 in one
    batch: the median pruner stops the hopeless one at its first report, its batch-mate runs
    every round."""
    path = write_study(tmp_path, "prune", world=WORLD, variants=None, fit={"rounds": 20},
                       search={"lr": [0.01, 0.02, 0.06, 1e-7]}, sampler={"type": "grid", "seed": 4},
                       seeds=[0, 1], objectives=[{"metric": "val_pairwise_accuracy"}],
                       pruner={"type": "median", "startup_trials": 0, "every": 5}, batch=2)
    run_study(path, trials=2, progress=False)
    report = run_study(path, progress=False)
    assert report.tally.complete == 3 and report.tally.pruned == 1
    by_lr = {trial.params["lr"]: trial for trial in _trials("prune")}
    assert [trial.params["lr"] for trial in _trials("prune")] == [0.01, 0.02, 1e-7, 0.06]
    hopeless, mate = by_lr[1e-7], by_lr[0.06]
    assert hopeless.state.name == "PRUNED" and list(hopeless.intermediate_values) == [5]
    assert mate.state.name == "COMPLETE" and list(mate.intermediate_values) == [5, 10, 15]
    runs = {run.data.params["fit.lr"]: run for run in trial_runs(
        runs_store.default_tracking_uri(), "prune")}
    assert runs["1e-07"].data.tags["pruned_at_round"] == "5"
    assert runs["0.06"].info.status == write.FINISHED
    assert len(runs["0.06"].data.metrics) > len(runs["1e-07"].data.metrics)  # the whole trial


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_batch_killed_mid_fit_requeues_its_untold_trials_and_the_rerun_is_whole(store,
                                                                                   tmp_path):
    path = write_study(tmp_path, "killed", variants=None,
                       world={"name": "planted", "options": {"n_train": 20000, "n_test": 300,
                                                             "d": 64}},
                       fit={"rounds": 150}, search={"lr": [0.02, 0.03, 0.05, 0.08]},
                       sampler={"type": "grid"}, seeds=[0, 1], batch=4)
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fairl.cli import main; sys.exit(main())",
         "study", "run", str(path), "--no-progress"], stdout=log, stderr=subprocess.STDOUT)
    journal, deadline, started = Path(resolve_storage()), time.time() + 180, []
    while len(started) < 4 and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
        try:
            started = [trial for trial in _trials("killed") if trial.state.name == "RUNNING"
                       and "mlflow_run_id" in trial.user_attrs]
        except (KeyError, FileNotFoundError):
            continue
    assert len(started) == 4, (tmp_path / "first.log").read_text()
    os.kill(process.pid, signal.SIGKILL)  # mid-fit: the batch's runs are started, none told
    process.wait()
    assert journal.exists()
    report = run_study(path, progress=False)
    assert report.status == write.FINISHED
    trials = _trials("killed")
    states = [trial.state.name for trial in trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 4
    killed = [trial for trial in trials if trial.state.name == "FAIL"]
    assert {trial.number for trial in killed} == {trial.number for trial in started}
    assert all("died" in trial.user_attrs["fairl_killed"] for trial in killed)
    retried = {trial.system_attrs.get("failed_trial") for trial in trials
               if trial.state.name == "COMPLETE"}
    assert retried == {trial.number for trial in started}  # each re-queued once, then run
    assert sorted(trial.params["lr"] for trial in trials if trial.state.name == "COMPLETE") \
        == [0.02, 0.03, 0.05, 0.08]
    uri = runs_store.default_tracking_uri()
    assert not [run for run in runs_of(uri, "killed") if run.info.status == "RUNNING"]
    assert len(trial_runs(uri, "killed", write.FINISHED)) == 4
    assert len(trial_runs(uri, "killed", write.KILLED)) == 4
