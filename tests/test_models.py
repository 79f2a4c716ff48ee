"""fairl.models: the reward model's files are mlflow.pyfunc.save_model's; logging it."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import yaml
from study_support import use_store

from fairl import models
from fairl.irl import FitConfig, FitResult
from fairl.runs import store as runs_store
from fairl.runs import write

DIM = 6


def heads(seeds=(0, 1, 2)) -> dict[int, FitResult]:
    rng = np.random.default_rng(7)
    return {seed: FitResult(rng.normal(size=DIM).astype(np.float32), float(seed),
                            rng.normal(size=DIM).astype(np.float32), -0.5, FitConfig(seed=seed),
                            [], np.zeros(0)) for seed in seeds}


@pytest.fixture
def store(tmp_path, monkeypatch, tmp_path_factory):
    return use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())


def test_model_files_are_what_pyfunc_save_model_writes(tmp_path):
    """Every file but MLmodel is save_model's byte for byte (the pickle: the same model);
    MLmodel is save_model's but for what differs between two saves (time, uuid, temp paths)."""
    import mlflow.pyfunc
    from mlflow.models import Model

    results, example = heads(), np.arange(2 * DIM, dtype=np.float32).reshape(2, DIM)
    files = models.model_files(None, DIM, example, results, 1, run_id="r1", model_id="m-1",
                               artifact_location="file:///somewhere")
    source = tmp_path / "heads.npz"
    source.write_bytes(models.heads_bytes(results))
    reference = tmp_path / "reference"
    mlflow.pyfunc.save_model(
        reference, python_model=models.RewardModel(None, DIM, 1),
        artifacts={"heads": str(source)}, signature=models._signature(None, DIM, 1),
        input_example=pd.DataFrame(example, columns=[f"h{i}" for i in range(DIM)]),
        model_config={"best_seed": 1},
        pip_requirements=[f"mlflow=={mlflow.__version__}", "numpy", "pandas"],
        metadata={"encoder": "none", "best_seed": 1, "seeds": [0, 1, 2]})
    saved = {str(f.relative_to(reference)): f.read_bytes()
             for f in reference.rglob("*") if f.is_file()}
    assert sorted(files) == sorted(saved)
    for name in set(saved) - {"MLmodel", "python_model.pkl"}:
        assert files[name] == saved[name], name
    ours, theirs = pickle.loads(files["python_model.pkl"]), pickle.loads(saved["python_model.pkl"])
    assert (type(ours), ours.encoder, ours.dim) == (type(theirs), theirs.encoder, theirs.dim)
    # MLmodel's text is what MLflow's own Model.to_yaml writes for it
    assert files["MLmodel"].decode() == Model.from_dict(
        yaml.safe_load(files["MLmodel"])).to_yaml()
    ours, theirs = yaml.safe_load(files["MLmodel"]), yaml.safe_load(saved["MLmodel"])
    assert (ours["run_id"], ours["model_id"], ours["model_uuid"], ours["artifact_path"]) == (
        "r1", "m-1", "m-1", "file:///somewhere")
    for mlmodel in (ours, theirs):
        for key in ("run_id", "model_id", "model_uuid", "artifact_path", "utc_time_created"):
            mlmodel.pop(key, None)
        del mlmodel["flavors"]["python_function"]["artifacts"]["heads"]["uri"]  # a temp path
    assert ours == theirs


def test_a_saved_model_scores_its_best_seed_and_any_other(tmp_path):
    """The pickled RewardModel is every trial's; the best seed comes from the model config."""
    import mlflow.pyfunc

    results = heads()
    h = np.random.default_rng(0).normal(size=(5, DIM)).astype(np.float32)
    for best in (2, 0):
        folder = tmp_path / f"best{best}"
        write.write_files(models.model_files(None, DIM, h[:2], results, best), folder)
        model = mlflow.pyfunc.load_model(str(folder))
        frame = pd.DataFrame(h, columns=[f"h{i}" for i in range(DIM)])
        np.testing.assert_allclose(model.predict(frame)["R"], results[best].reward(h), atol=1e-6)
        np.testing.assert_allclose(model.predict(frame, params={"seed": 1})["R"],
                                   results[1].reward(h), atol=1e-6)
        assert model.metadata.metadata["best_seed"] == best


def test_log_reward_model_links_run_and_model(store):
    uri = runs_store.resolve_tracking_uri()
    experiment = runs_store.experiment_id(uri, "models-test")
    run = write.start_run(uri, experiment, "trial", {"kind": "trial"})
    results, h = heads(), np.ones((2, DIM), np.float32)
    model_uri = models.log_reward_model(uri, run, results, 1, None, h,
                                        experiment_id=experiment, params={"fit.lr": "0.1"})
    model_id = model_uri.removeprefix("models:/")
    client = runs_store.client(uri)
    logged = client.get_logged_model(model_id)
    assert str(logged.status) == "READY" and logged.params == {"fit.lr": "0.1"}
    assert (logged.experiment_id, logged.source_run_id, logged.name) == (experiment, run, "reward")
    assert [o.model_id for o in client.get_run(run).outputs.model_outputs] == [model_id]
    model = models.load_reward(model_uri, uri)
    assert model.best_seed == 1 and sorted(model.results) == [0, 1, 2]


def test_a_model_whose_files_fail_is_marked_failed(store, monkeypatch):
    uri = runs_store.resolve_tracking_uri()
    experiment = runs_store.experiment_id(uri, "models-test")
    run = write.start_run(uri, experiment, "trial", {"kind": "trial"})

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models, "model_files", broken)
    with pytest.raises(OSError, match="No space left"):
        models.log_reward_model(uri, run, heads(), 0, None, np.ones((2, DIM), np.float32),
                                experiment_id=experiment)
    (model,) = runs_store.client(uri).search_logged_models([experiment])
    assert str(model.status) == "FAILED" and model.source_run_id == run
