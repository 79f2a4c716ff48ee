"""fairl.study: study files, Optuna + MLflow end to end, resume, kills, workers, PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from study_support import (
    postgres_or_skip,
    runs_of,
    trial_runs,
    use_store,
    write_study,
)

from fairl.config import ConfigError
from fairl.runs import store as runs_store
from fairl.runs import write
from fairl.study.runner import run_study
from fairl.study.spec import load_study
from fairl.study.status import study_status
from fairl.study.storage import open_storage, resolve_storage

STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    """A fresh MLflow store + journal under tmp_path (never the repo's mlruns/)."""
    return use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())


def optuna_trials(name: str, storage: str | None = None):
    import optuna

    storage = storage or resolve_storage()
    return optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials()


def states(trials) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


# --- study files -------------------------------------------------------------------------------

def test_every_study_file_validates():
    names = {path.stem: load_study(path) for path in STUDIES.glob("*.yaml")}
    required = {"smoke", "main_table", "fa_sweep", "tnt_fraction", "ablation_no_rf",
                "ablation_fixed_lambda", "ablation_failure_source", "identifiability",
                "regime_map"}
    assert required <= set(names)
    for study in names.values():
        assert study.trials >= 1 and study.spec.seeds and study.spec.objectives


def test_every_study_file_selects_on_validation_or_says_select_on_test():
    """No study in studies/ optimises a test metric unless it says `select_on: test`."""
    for path in sorted(STUDIES.glob("*.yaml")):
        study = load_study(path)
        for metric in study.spec.metrics:
            assert not metric.startswith("test_") or study.spec.select_on == "test", \
                f"{path.name}: objective {metric} selects on the test split"
    for name in ("main_table", "ablation_no_rf", "ablation_fixed_lambda",
                 "ablation_failure_source"):
        assert load_study(STUDIES / f"{name}.yaml").spec.data_resample == "bootstrap", name


def test_a_test_objective_needs_select_on_test(tmp_path):
    path = write_study(tmp_path, "peeks", objectives=[{"metric": "val_f1"},
                                                      {"metric": "test_starc"}])
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: objectives\.1\.metric: "
                                          "test_starc selects configurations on the test split"):
        load_study(path)
    allowed = load_study(write_study(tmp_path, "knowingly", objectives=[{"metric": "test_f1"}],
                                     select_on="test"))
    assert allowed.spec.select_on == "test" and allowed.spec.metrics == ["test_f1"]
    assert load_study(write_study(tmp_path, "default")).spec.select_on == "validation"


def test_paper_studies_cover_what_the_paper_needs():
    def grid(name):
        study = load_study(STUDIES / f"{name}.yaml")
        assert study.spec.sampler.type == "grid"
        return study, {key: param.choices for key, param in study.space.items()}

    study, space = grid("main_table")
    assert set(space["objective"]) == {"max_margin", "max_entropy"}
    methods = {study.spec.variants[v].get("dual_path", True) and
               study.spec.variants[v].get("failure_mode", "margin") for v in space["variant"]}
    assert methods == {False, "margin"}  # standard IRL and FA-IRL
    assert len(study.spec.seeds) >= 5 and study.trials == 4

    study, space = grid("tnt_fraction")
    assert space["world.compose.tnt_fraction"] == [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
    assert len(space["variant"]) == 2 and study.spec.world["compose"]["n"] > 0

    _, space = grid("ablation_fixed_lambda")
    assert space["lambda0"] == [1.0, 5.0, 10.0, 20.0] and set(space["lambda_fixed"]) == {True, False}

    study, space = grid("ablation_failure_source")
    modes = {study.spec.variants[v]["failure_mode"] for v in space["variant"]}
    assert {"ground_truth", "margin", "ensemble", "none"} <= modes

    study, space = grid("ablation_no_rf")
    assert any(v.get("dual_path") is False and v.get("failure_mode") == "margin"
               for v in study.spec.variants.values())

    sweep = load_study(STUDIES / "fa_sweep.yaml")
    assert {"M_fail", "tau_fail", "lambda0", "lambda_decay", "gamma_shape", "p0"} <= set(sweep.space)


MALFORMED = [
    # (case, top-level replacements, field the error must name)
    ("unknown key", {"colour": "red"}, "colour"),
    ("wrong type", {"trials": "many"}, "trials"),
    ("empty grid", {"search": {"objective": []}}, "search.objective"),
    ("bad range", {"search": {"lr": {"type": "float", "low": 0.5, "high": 0.1}},
                   "sampler": {"type": "tpe"}, "trials": 3}, "search.lr"),
    ("log range from 0", {"search": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}},
                          "sampler": {"type": "random"}, "trials": 3}, "search.lr"),
    ("missing world", {"world": None}, "world"),
    ("unknown world", {"world": {"name": "nowhere"}}, "world.name"),
    ("bad world option", {"world": {"name": "planted", "options": {"n_train": -5}}},
     "world.options.n_train"),
    ("unknown world option", {"world": {"name": "planted", "options": {"colour": 1}}},
     "world.options.colour"),
    ("unknown fit field", {"fit": {"learning_rate": 0.1}}, "fit.learning_rate"),
    ("bad fit value", {"fit": {"lr": -1}}, "fit.lr"),
    ("seed in fit", {"fit": {"seed": 3}}, "fit"),
    ("seed searched", {"search": {"seed": [1, 2]}}, "search.seed"),
    ("no seeds", {"seeds": []}, "seeds"),
    ("duplicate seeds", {"seeds": [0, 0]}, "seeds"),
    ("unknown sampler", {"sampler": {"type": "bayes"}}, "sampler.type"),
    ("unknown metric", {"objectives": [{"metric": "test_accuracyy"}]}, "objectives.0.metric"),
    ("test objective without select_on", {"objectives": [{"metric": "test_f1"}]},
     "objectives.0.metric"),
    ("unknown select_on", {"select_on": "train"}, "select_on"),
    ("unknown data_resample", {"data_resample": "jackknife"}, "data_resample"),
    ("bad direction", {"objectives": [{"metric": "test_f1", "direction": "up"}]},
     "objectives.0.direction"),
    ("missing objectives", {"objectives": None}, "objectives"),
    ("range in a grid", {"search": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}},
     "search.lr"),
    ("trials beyond grid", {"trials": 99}, "trials"),
    ("tpe without trials", {"sampler": {"type": "tpe"}}, "trials"),
    ("unknown parameter", {"search": {"colour": ["red"]}}, "search.colour"),
    ("bad variant value", {"variants": {"fa_irl": {"failure_mode": "sometimes"}}},
     "variants.fa_irl.failure_mode"),
    ("unknown variant", {"search": {"variant": ["nope"]}}, "search.variant"),
    ("invalid searched value", {"search": {"M_fail": [0.5]}}, "search.M_fail"),
    ("param without type", {"search": {"lr": {"low": 0.1, "high": 1}}}, "search.lr"),
    ("variant clash", {"search": {"failure_mode": ["margin"]},
                       "variants": {"a": {"failure_mode": "none"}, "b": {}}}, "search.failure_mode"),
    ("compose searched without base", {"search": {"world.compose.tnt_fraction": [0.5]}},
     "search.world.compose.tnt_fraction"),
]


@pytest.mark.parametrize("case, fields, field", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_study_file_names_file_and_field_and_creates_nothing(
        case, fields, field, tmp_path, monkeypatch):
    store = tmp_path / "mlruns"
    monkeypatch.setenv("FAIRL_MLRUNS", str(store))
    monkeypatch.delenv("FAIRL_STORAGE", raising=False)
    monkeypatch.delenv("FAIRL_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write_study(tmp_path, "bad", **fields)
    with pytest.raises(ConfigError) as error:
        run_study(path, progress=False)
    message = str(error.value)
    assert str(path) in message and re.search(rf"{re.escape(field)}[.:]", message), message
    assert not store.exists() or not any(store.iterdir())  # no journal, db, run or artifact


@pytest.mark.parametrize("text", ["world: [unclosed", "- just\n- a list\n"])
def test_unreadable_study_file_names_the_file(text, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_study(path)


def test_cli_reports_config_errors_with_exit_2(tmp_path, capsys, monkeypatch):
    from fairl.cli import main

    monkeypatch.setenv("FAIRL_MLRUNS", str(tmp_path / "mlruns"))
    path = write_study(tmp_path, "bad", trials=0)
    assert main(["study", "run", str(path), "--no-progress"]) == 2
    assert f"{path}: trials:" in capsys.readouterr().err


# --- end to end ----------------------------------------------------------------------------------

def test_smoke_study_end_to_end(store, capsys):
    report = run_study(STUDIES / "smoke.yaml", progress=False)
    assert report.status == write.FINISHED
    uri = runs_store.default_tracking_uri()
    trials = optuna_trials("smoke")
    complete = [trial for trial in trials if trial.state.name == "COMPLETE"]
    finished = trial_runs(uri, "smoke", write.FINISHED)
    assert len(complete) == report.target == len(finished) == 4

    client = runs_store.client(uri)
    by_id = {run.info.run_id: run for run in finished}
    for trial in complete:  # trial <-> run, both ways
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["trial_number"] == str(trial.number)
        assert run.data.tags["config_id"] == trial.user_attrs["config_id"]
        assert trial.values[0] == pytest.approx(run.data.metrics["val_f1"])  # selects on val
    for run in finished:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        assert {"fit.lr", "fit.lambda0", "fit.objective", "world.name", "seeds", "variant"} <= set(params)
        for split in ("train", "val", "test"):
            for metric in write.FINAL_METRICS:
                assert f"{split}_{metric}" in metrics and f"seed_1/{split}_{metric}" in metrics
        for curve in ("loss", "loss_base", "loss_fail", "loss_l2", "n_failures", "n_sampled",
                      "gamma", "lam", "p"):
            history = client.get_metric_history(run.info.run_id, f"curve/{curve}")
            assert len(history) >= 2 and sorted(m.step for m in history) == list(range(20))
        for tag in ("study", "ablation", "method", "seed", "world", "dataset_hash", "git_commit",
                    "git_dirty", "fairl_version", "trial_number", "config_id"):
            assert tags.get(tag), tag
        assert tags["seed"] == "0,1" and tags["study"] == "smoke"
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "failures.csv", "history.csv"} <= artifacts
        config = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml"))
                                .read_text())
        assert config["fit"]["lr"] == pytest.approx(float(params["fit.lr"]))
    # The MLflow UI: the experiment opens on its runs, runs say what differs, the world is input.
    experiment = client.get_experiment_by_name("smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{runs_store.VIEW_KEY}"])
    for column in view["selectedColumns"]:  # the runs table's columns: logged on every trial
        kind, key = re.fullmatch(r"(\w+)\.`(.+)`", column).groups()
        assert kind == "attributes" or all(
            key in getattr(run.data, kind) for run in finished), column
    names = [run.info.run_name for run in finished]
    assert len(set(names)) == 4, names
    for run in finished:
        name, tags = run.info.run_name, run.data.tags
        assert name.startswith(run.data.params["variant"] + " · ") and " · lr=" in name, name
        assert name.endswith(f" #{tags['trial_number']}"), name
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        contexts = {i.tags[0].value: i.dataset for i in inputs}
        assert set(contexts) == {"train", "validation", "test"}, contexts
        assert {d.digest for d in contexts.values()} == {tags["dataset_hash"][:36]}
        assert contexts["test"].name == "planted/test"
        assert json.loads(contexts["test"].profile)["num_rows"] == 300
    launches = [run for run in runs_of(uri, "smoke") if run.data.tags.get("kind") == "launch"]
    assert len(launches) == 1 and launches[0].info.status == write.FINISHED
    launch = launches[0]
    assert 0 < launch.data.metrics["reference_oracle_test_starc"] < 1
    assert 0 < launch.data.metrics["reference_bt_irl_test_starc"] < 1
    verdicts = json.loads(Path(client.download_artifacts(launch.info.run_id, "verdicts.json"))
                          .read_text())
    assert verdicts["rows"] == []  # random search over lr: no two runs share a context
    assert verdicts["references"]["reference_oracle_test_starc"] == pytest.approx(
        launch.data.metrics["reference_oracle_test_starc"])
    assert all(run.data.tags["mlflow.parentRunId"] == launches[0].info.run_id for run in finished)
    assert "smoke: 4/4 done" in study_status("smoke")
    check_reward_models(uri, finished, capsys)


def check_reward_models(uri: str, finished: list, capsys) -> None:
    """Every trial's reward is a pyfunc model equal to its rewards.npz heads; best registers."""
    import mlflow.pyfunc
    import pandas as pd

    from fairl.cli import main
    from fairl.irl import FitConfig, FitResult
    from fairl.runs.read import heads_from_run

    h = np.random.default_rng(0).normal(size=(7, 16)).astype(np.float32)
    frame = pd.DataFrame(h, columns=[f"h{i}" for i in range(16)])
    client = runs_store.client(uri)
    mlflow.set_tracking_uri(uri)  # models:/ URIs below resolve in the study's store
    for run in finished:
        tags = run.data.tags
        # The run's output, in the run's experiment: what MLflow's runs table lists as Models.
        model_id = tags["reward_model_uri"].removeprefix("models:/")
        assert [output.model_id for output in run.outputs.model_outputs] == [model_id]
        logged = client.get_logged_model(model_id)
        assert (logged.experiment_id, logged.source_run_id, logged.name) == (
            run.info.experiment_id, run.info.run_id, "reward")
        assert logged.params == run.data.params and "fit.lr" in logged.params  # its config
        assert tags["torch_threads"] == str(torch.get_num_threads())  # results depend on it
        model = mlflow.pyfunc.load_model(tags["reward_model_uri"])
        assert [c.name for c in model.metadata.signature.outputs.inputs] == ["R", "R_D", "R_F"]
        assert model.metadata.get_input_schema().input_names()[:2] == ["h0", "h1"]
        for seed in (0, 1):
            heads, _ = heads_from_run(uri, run.info.run_id, seed)
            result = FitResult.from_heads(heads, FitConfig(seed=seed))
            params = None if str(seed) == tags["reward_best_seed"] else {"seed": seed}
            out = model.predict(frame, params=params)
            np.testing.assert_allclose(out["R"], result.reward(h), atol=1e-6)
            np.testing.assert_allclose(out["R_D"], result.reward_D(h), atol=1e-6)
            np.testing.assert_allclose(out["R_F"], result.reward_F(h), atol=1e-6)
    # The check Model.log would make (fairl.models logs without it): the saved serving input
    # example goes through the serving path and scores as the model does directly.
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model, validate_serving_input

    folder = download_artifacts(finished[0].data.tags["reward_model_uri"])
    serving_input = Model.load(folder).get_serving_input(folder)
    assert serving_input is not None
    served = validate_serving_input(finished[0].data.tags["reward_model_uri"], serving_input)
    example = mlflow.pyfunc.load_model(folder).input_example
    assert len(served) == 2 and np.isfinite(np.asarray(served["R"])).all()
    np.testing.assert_allclose(served["R"], mlflow.pyfunc.load_model(folder).predict(example)["R"])
    capsys.readouterr()
    assert main(["study", "best", "smoke", "--register", "--alias", "champion"]) == 0
    printed = capsys.readouterr().out
    assert "registered smoke version 1: models:/smoke@champion" in printed, printed
    best_run = re.search(r"run ([0-9a-f]{32})", printed).group(1)
    registered = mlflow.pyfunc.load_model("models:/smoke@champion")
    logged = next(r.data.tags["reward_model_uri"] for r in finished
                  if r.info.run_id == best_run)
    logged = mlflow.pyfunc.load_model(logged)
    pd.testing.assert_frame_equal(registered.predict(frame), logged.predict(frame))


def test_rerun_continues_to_the_trial_count(store, tmp_path):
    path = write_study(tmp_path, "resume", search={
        "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
        "rounds": {"type": "int", "low": 3, "high": 9, "step": 2}},
        sampler={"type": "random"}, trials=4)
    assert run_study(path, trials=2, progress=False).tally.complete == 2
    assert run_study(path, progress=False).tally.complete == 4
    again = run_study(path, progress=False)  # nothing left to do
    trials = optuna_trials("resume")
    assert again.tally.complete == 4 and len(trials) == 4
    assert len({json.dumps(trial.params, sort_keys=True) for trial in trials}) == 4
    assert {trial.params["rounds"] for trial in trials} <= {3, 5, 7, 9}
    runs = trial_runs(runs_store.default_tracking_uri(), "resume", write.FINISHED)
    assert len(runs) == 4
    assert sorted(run.data.params["fit.rounds"] for run in runs) == sorted(
        str(trial.params["rounds"]) for trial in trials)


def test_changed_study_is_refused_not_mixed(store, tmp_path):
    path = write_study(tmp_path, "changing", search={"objective": ["max_margin"]})
    run_study(path, progress=False)
    write_study(tmp_path, "changing", search={"objective": ["max_entropy"]})
    with pytest.raises(ConfigError, match="different configuration"):
        run_study(path, progress=False)


def test_diverging_fit_is_a_failed_run_and_the_study_goes_on(store, tmp_path, capsys):
    path = write_study(tmp_path, "diverge", search={},
                       variants={"diverges": {"optimizer": "sgd", "lr": 1.0e38}, "fine": {}})
    report = run_study(path, progress=False)
    assert report.status == write.FINISHED
    assert (report.tally.complete, report.tally.failed) == (1, 1)
    assert states(optuna_trials("diverge")) == {"COMPLETE": 1, "FAIL": 1}
    uri = runs_store.default_tracking_uri()
    failed = trial_runs(uri, "diverge", write.FAILED)
    assert len(failed) == 1 and len(trial_runs(uri, "diverge", write.FINISHED)) == 1
    assert failed[0].data.tags["variant"] == "diverges"
    assert failed[0].data.tags["error"].startswith("FitDiverged: loss is nan at round")
    client = runs_store.client(uri)
    traceback_text = Path(client.download_artifacts(failed[0].info.run_id, "traceback.txt"))
    assert "FitDiverged" in traceback_text.read_text()
    assert "FitDiverged" in study_status("diverge")
    assert "trial" in capsys.readouterr().err  # one readable line per failed trial


def test_interrupted_trial_is_requeued_and_rerun(store, tmp_path, monkeypatch):
    from fairl.study import trial

    path = write_study(tmp_path, "interrupt")
    real_evaluate = trial.evaluate
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trial, "evaluate", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_study(path, progress=False)
    monkeypatch.setattr(trial, "evaluate", real_evaluate)
    report = run_study(path, progress=False)
    trials = optuna_trials("interrupt")
    complete = [trial for trial in trials if trial.state.name == "COMPLETE"]
    assert report.tally.complete == 4 and len(complete) == 4
    assert len({json.dumps(trial.params, sort_keys=True) for trial in complete}) == 4
    uri = runs_store.default_tracking_uri()
    assert len(trial_runs(uri, "interrupt", write.KILLED)) == 1
    assert len(trial_runs(uri, "interrupt", write.FINISHED)) == 4
    assert not [run for run in runs_of(uri, "interrupt") if run.info.status == "RUNNING"]


def test_cli_study_run_list_status(store, tmp_path, capsys):
    from fairl.cli import main

    path = write_study(tmp_path, "clistudy", search={"objective": ["max_margin"]})
    assert main(["study", "run", str(path), "--no-progress"]) == 0
    assert "clistudy: 2/2 done" in capsys.readouterr().out
    assert main(["study", "list"]) == 0
    assert "clistudy: 2/2 done (2 complete, 0 failed), 0 running" in capsys.readouterr().out
    assert main(["study", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "best trial" in out and "mlflow_run_id=" in out
    assert main(["study", "status", "nope"]) == 2


# --- kills and concurrency ---------------------------------------------------------------------

def test_rdb_heartbeat_requeues_the_trial_of_a_silent_remote_worker(store, tmp_path, monkeypatch):
    from fairl.study import runner, spec
    from fairl.study import storage as storage_module

    # A worker on another machine took trial 0, beat once, and vanished: its pid cannot be
    # checked from here, so only the RDB heartbeat can tell it is gone.
    monkeypatch.setattr(storage_module, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(storage_module, "GRACE_SECONDS", 1)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = write_study(tmp_path, "remote")
    study = load_study(path)
    study_obj = storage_module.open_study(study, storage, study.trials)
    study_obj.sampler = runner.make_sampler(study, 0)
    with pytest.warns(UserWarning, match="Heartbeat"):
        lost = study_obj.ask()
    spec.suggest(lost, study.space)
    lost.set_user_attr("worker", "elsewhere.example:123:456")
    study_obj._storage.record_heartbeat(lost._trial_id)
    time.sleep(2.5)

    report = run_study(path, storage=storage, progress=False)
    assert report.status == write.FINISHED and report.tally.complete == 4
    trials = optuna_trials("remote", storage)
    assert states(trials) == {"COMPLETE": 4, "FAIL": 1} and trials[0].state.name == "FAIL"
    retry = [trial for trial in trials if trial.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].params == lost.params
    complete = [trial for trial in trials if trial.state.name == "COMPLETE"]
    assert len({json.dumps(trial.params, sort_keys=True) for trial in complete}) == 4


def slow_grid(directory: Path, name: str) -> Path:
    """8 configurations that take about a second each (so a kill lands mid-trial)."""
    return write_study(directory, name,
                       world={"name": "planted", "options": {"n_train": 20000, "n_test": 500,
                                                             "d": 64}},
                       fit={"rounds": 150},
                       search={"objective": ["max_margin", "max_entropy"], "lr": [0.02, 0.05]})


@pytest.mark.slow
def test_sigkill_mid_study_then_rerun_finishes_without_duplicates_or_leftovers(store, tmp_path):
    import optuna

    path = slow_grid(tmp_path, "killed")
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fairl.cli import main; sys.exit(main())",
         "study", "run", str(path), "--no-progress"], stdout=log, stderr=subprocess.STDOUT)
    journal = Path(resolve_storage())
    deadline = time.time() + 180
    victim = None
    while victim is None and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
        if not journal.exists():
            continue
        try:
            trials = optuna.load_study(study_name="killed",
                                       storage=open_storage(str(journal))).get_trials()
        except KeyError:
            continue
        if any(trial.state.name == "COMPLETE" for trial in trials):
            victim = next((trial for trial in trials if trial.state.name == "RUNNING"
                           and "mlflow_run_id" in trial.user_attrs), None)
    assert victim is not None, (tmp_path / "first.log").read_text()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    uri = runs_store.default_tracking_uri()
    assert states(optuna_trials("killed")).get("RUNNING") == 1
    assert any(run.info.status == "RUNNING" for run in runs_of(uri, "killed"))

    report = run_study(path, progress=False)
    assert any(f"trial {victim.number}: worker" in message for message in report.messages)
    trials = optuna_trials("killed")
    complete = [trial for trial in trials if trial.state.name == "COMPLETE"]
    assert report.status == write.FINISHED and len(complete) == 8
    assert states(trials) == {"COMPLETE": 8, "FAIL": 1}  # the killed trial, re-queued
    assert len({json.dumps(trial.params, sort_keys=True) for trial in complete}) == 8
    killed = trials[victim.number]
    assert killed.state.name == "FAIL" and "died" in killed.user_attrs["fairl_killed"]
    retry = [trial for trial in trials if trial.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params
    runs = runs_of(uri, "killed")
    assert not [run for run in runs if run.info.status == "RUNNING"]
    assert len(trial_runs(uri, "killed", write.FINISHED)) == 8
    by_id = {run.info.run_id: run for run in runs}
    assert by_id[victim.user_attrs["mlflow_run_id"]].info.status == write.KILLED
    launches = sorted((run for run in runs if run.data.tags["kind"] == "launch"),
                      key=lambda run: run.info.start_time)
    assert [run.info.status for run in launches] == [write.KILLED, write.FINISHED]


def check_two_workers(path: Path, storage: str | None):
    name = path.stem
    report = run_study(path, workers=2, storage=storage, progress=False)
    assert report.status == write.FINISHED
    trials = optuna_trials(name, storage)
    assert states(trials) == {"COMPLETE": 8}
    assert sorted(trial.number for trial in trials) == list(range(8))
    assert len({json.dumps(trial.params, sort_keys=True) for trial in trials}) == 8
    runs = trial_runs(runs_store.default_tracking_uri(), name)
    assert len(runs) == 8 and {run.info.status for run in runs} == {write.FINISHED}
    assert sorted(int(run.data.tags["trial_number"]) for run in runs) == list(range(8))
    pids = {run.data.tags["worker"].split(":")[1] for run in runs}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # two processes, not this one


@pytest.mark.slow
def test_two_worker_processes_on_a_journal(store, tmp_path):
    check_two_workers(slow_grid(tmp_path, "twojournal"), None)


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server (Debian packages; .ci/postgres.sh installs them in CI)."""
    with postgres_or_skip() as url:
        yield url


@pytest.mark.slow
def test_two_worker_processes_on_postgresql(store, tmp_path, postgres):
    check_two_workers(slow_grid(tmp_path, "twopostgres"), postgres)


def test_data_resample_bootstrap_redraws_training_prompts_per_seed(store, tmp_path):
    """data_resample: bootstrap changes each seed's training set (and the config id), keyed
    by the seed; the test split is untouched."""
    from fairl.experiment import WorldSpec, run_experiment
    from fairl.irl.config import FitConfig
    from fairl.study.spec import resolve

    world = WorldSpec("planted", {"n_train": 200, "n_test": 100, "d": 4,
                                  "max_pairs_per_prompt": 3})
    fit = FitConfig(rounds=3, seed=1)
    plain = run_experiment(world, fit)
    a, b = (run_experiment(world, fit, data_resample="bootstrap") for _ in range(2))
    other = run_experiment(world, FitConfig(rounds=3, seed=2), data_resample="bootstrap")
    assert np.array_equal(a.train.h_T, b.train.h_T)
    assert not np.array_equal(a.train.h_T, plain.train.h_T)
    assert not np.array_equal(a.train.prompt_ids, other.train.prompt_ids)
    ids = plain.train.prompt_ids
    for prompt in np.unique(a.train.prompt_ids):  # a drawn prompt carries all its pairs
        assert np.sum(a.train.prompt_ids == prompt) % np.sum(ids == prompt) == 0
    assert a.test_metrics != plain.test_metrics and a.val_metrics is not None
    study = load_study(write_study(tmp_path, "resampled", data_resample="bootstrap"))
    config = resolve(study.spec, {"variant": "fa_irl", "objective": "max_margin"})
    assert config.data_resample == "bootstrap" and config.as_dict()["data_resample"] == "bootstrap"
    plain_config = resolve(load_study(write_study(tmp_path, "plain")).spec,
                           {"variant": "fa_irl", "objective": "max_margin"})
    assert config.config_id != plain_config.config_id
