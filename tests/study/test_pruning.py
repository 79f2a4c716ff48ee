"""Pruning (fairl.study.pruning): Optuna's pruners over the objective a trial reports."""

from __future__ import annotations

import optuna
import pytest
from study_support import runs_of, use_store, write_study

from fairl.config import ConfigError
from fairl.data.planted import PlantedConfig, make_planted
from fairl.experiment import WorldSpec, run_experiment
from fairl.irl.config import FitConfig
from fairl.runs.read import load_study_runs
from fairl.study.pruning import TrialMonitor, make_pruner
from fairl.study.runner import run_study
from fairl.study.spec import PrunerSpec, load_study

WORLD = {"name": "planted", "options": {"n_train": 400, "n_test": 200, "n_val": 200, "d": 8,
                                        "label_noise": 0.0, "seed": 0}}


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())


def _trial_values(world, lr: float, storage_study, rounds: int = 30):
    """One Optuna trial of two seeds, reporting val pairwise accuracy every 5 rounds."""
    trial = storage_study.ask()
    monitor = TrialMonitor(trial, "val_pairwise_accuracy", 5, rounds, 2, world.validation)
    try:
        for seed in (0, 1):
            outcome = run_experiment(WorldSpec(**WORLD), FitConfig(rounds=rounds, lr=lr,
                                                                   seed=seed), world,
                                     monitor=monitor)
            monitor.finish_seed(outcome.val_metrics["pairwise_accuracy"])
    except optuna.TrialPruned:
        storage_study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return "pruned", trial
    storage_study.tell(trial, sum(monitor.finals) / 2)
    return "complete", trial


def test_median_pruner_prunes_the_trial_whose_reports_are_worst():
    """Deterministic toy: a good learning rate twice (equal reports: neither is below the
    median), then one so small the heads stay at their random start; the median pruner stops
    that one at its first report, the others run out."""
    world = make_planted(PlantedConfig(**WORLD["options"]))
    study = optuna.create_study(direction="maximize",
                                pruner=make_pruner(PrunerSpec(type="median", startup_trials=0,
                                                              every=5), 60))
    states = [_trial_values(world, lr, study)[0] for lr in (0.1, 0.1, 1e-7)]
    assert states == ["complete", "complete", "pruned"]
    pruned = study.trials[2]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert list(pruned.intermediate_values) == [5]  # stopped at its first report
    good = study.trials[0].intermediate_values
    assert pruned.intermediate_values[5] < min(good.values())
    # reports cover both seeds: seed 1's rounds continue after seed 0's (k = 30 + t + 1)
    assert sorted(good) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]


def test_pruned_trial_is_tagged_in_mlflow_and_the_study_reaches_its_count(store, tmp_path):
    """A grid whose order (seed 1: checked below) runs the hopeless learning rate second: it is
    PRUNED in Optuna, its MLflow run FINISHED with tag pruned_at_round, counted done, and left
    out of what reports read."""
    path = write_study(tmp_path, "prune", world=WORLD, variants=None,
                       fit={"rounds": 30, "objective": "max_margin"},
                       search={"lr": [0.1, 1e-7]}, sampler={"type": "grid", "seed": 1},
                       seeds=[0, 1], objectives=[{"metric": "val_pairwise_accuracy"}],
                       pruner={"type": "median", "startup_trials": 0, "every": 5})
    report = run_study(path, progress=False)
    assert report.tally.done == 2 and report.tally.failed == 0
    assert report.tally.pruned == 1 and report.tally.complete == 1
    study = optuna.load_study(study_name="prune",
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(
                                      str(store / "optuna.journal"))))
    assert [trial.params["lr"] for trial in study.trials] == [0.1, 1e-7]  # the grid's order
    by_lr = {trial.params["lr"]: trial for trial in study.trials}
    assert by_lr[1e-7].state == optuna.trial.TrialState.PRUNED
    runs = {run.data.params["fit.lr"]: run for run in runs_of(
        f"sqlite:///{store / 'mlflow.db'}", "prune") if run.data.tags.get("kind") == "trial"}
    hopeless = runs["1e-07"]
    assert hopeless.info.status == "FINISHED"
    assert hopeless.data.tags["pruned_at_round"] == str(
        max(by_lr[1e-7].intermediate_values))
    assert hopeless.data.metrics["pruned_val_pairwise_accuracy"] == pytest.approx(
        by_lr[1e-7].intermediate_values[max(by_lr[1e-7].intermediate_values)])
    assert all("pruned_at_round" not in run.data.tags for lr, run in runs.items()
               if lr != "1e-07")
    loaded = load_study_runs.__wrapped__(f"sqlite:///{store / 'mlflow.db'}", "prune",
                                         str(path))
    assert loaded.pruned == 1 and len(loaded.runs) == 1
    launch = next(run for run in runs_of(f"sqlite:///{store / 'mlflow.db'}", "prune")
                  if run.data.tags.get("kind") == "launch")
    assert launch.data.metrics["trials_pruned"] == 1


def test_pruner_needs_one_objective_and_not_a_train_metric(tmp_path):
    two = write_study(tmp_path, "two", pruner={"type": "median"},
                      objectives=[{"metric": "val_f1"}, {"metric": "val_starc"}])
    with pytest.raises(ConfigError, match="pruner.type: median needs one objective"):
        load_study(two)
    train = write_study(tmp_path, "train", pruner={"type": "hyperband"},
                        objectives=[{"metric": "train_f1"}])
    with pytest.raises(ConfigError, match="pruner.type: prunes on a val_"):
        load_study(train)
    bad = write_study(tmp_path, "bad", pruner={"type": "median", "every": 0})
    with pytest.raises(ConfigError, match="pruner.every"):
        load_study(bad)


@pytest.mark.parametrize("kind,expected", [
    ("none", optuna.pruners.NopPruner), ("median", optuna.pruners.MedianPruner),
    ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ("hyperband", optuna.pruners.HyperbandPruner)])
def test_make_pruner(kind, expected):
    assert isinstance(make_pruner(PrunerSpec(type=kind), 300), expected)
