"""The recovered reward as an MLflow pyfunc model: text (or embeddings) in, R, R_D, R_F out.

A trial logs one model, `reward`, holding every seed's heads (a few KB each) and the name of
the frozen encoder; `predict` scores the best seed unless `params={"seed": s}` says another.
Texts are encoded by `fairl.lm.encode` (the MiniLM wheel or the local LM cache, never a hub), so
loading needs fairl installed. Worlds without text (planted) take embeddings, columns h0, h1...
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import json
import logging
import os
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import yaml
from mlflow.models import Model
from mlflow.models.model import MODEL_CONFIG

from fairl.irl import FitConfig, FitResult
from fairl.lm.encode import encode, get_encoder
from fairl.runs.read import seeds_of
from fairl.runs.store import client
from fairl.runs.write import local_dir, start_logged_model, write_files

# libyaml's loader and emitter where PyYAML was built with it (its wheels are)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
ARTIFACT = "reward"  # the model's name in a trial run: runs:/<run id>/reward
HEADS_FILE = "heads.npz"
OUTPUTS = ("R", "R_D", "R_F")


class RewardModel(mlflow.pyfunc.PythonModel):
    """R(o) = R_D(o) + R_F(o) of linear heads on a frozen encoder, for every fitted seed."""

    def __init__(self, encoder: str | None, dim: int, best_seed: int):
        self.encoder, self.dim, self.best_seed = encoder, dim, best_seed
        self.results: dict[int, FitResult] = {}

    def load_context(self, context) -> None:
        self.results = read_heads(Path(context.artifacts["heads"]).read_bytes())
        # The pickled instance is shared by every trial's model (fairl.models._pyfunc_files);
        # the best seed is the model's config. Models logged before carry it pickled.
        self.best_seed = int((context.model_config or {}).get("best_seed", self.best_seed))

    def result(self, seed: int | None = None) -> FitResult:
        """One seed's heads as a FitResult (the best seed by default)."""
        seed = self.best_seed if seed is None else int(seed)
        if seed not in self.results:
            raise ValueError(f"reward model: no seed {seed}; it has {sorted(self.results)}")
        return self.results[seed]

    def embed(self, frame: pd.DataFrame) -> np.ndarray:
        """Embeddings of the input rows: column `text` encoded, or columns h0..h{d-1}."""
        if "text" in frame.columns:
            if self.encoder is None:
                raise ValueError("reward model of a world without text: give columns "
                                 f"h0..h{self.dim - 1}, not `text`")
            # Cached: MLflow predicts the input example (the world's own, cached texts) when
            # logging; from the cache that costs no encoder load.
            return encode([str(t) for t in frame["text"]], get_encoder(self.encoder),
                          progress=False)
        columns = [f"h{i}" for i in range(self.dim)]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"reward model input: column `text` or {columns[0]}.."
                             f"{columns[-1]} needed (missing {missing[:3]})")
        return frame[columns].to_numpy(np.float32)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) \
            else pd.DataFrame({"text": list(model_input)})
        result = self.result((params or {}).get("seed"))
        h = self.embed(frame)
        r_d, r_f = result.reward_D(h), result.reward_F(h)
        return pd.DataFrame({"R": (r_d + r_f).astype(np.float64),
                             "R_D": r_d.astype(np.float64), "R_F": r_f.astype(np.float64)})


def heads_bytes(results: dict[int, FitResult]) -> bytes:
    """Every seed's heads and fit config in one .npz (keys seed<s>/...)."""
    arrays = {}
    for seed, result in results.items():
        arrays.update({f"seed{seed}/{k}": v for k, v in result.heads().items()})
        arrays[f"seed{seed}/config"] = np.array(json.dumps(result.config.__dict__, default=str))
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def read_heads(data: bytes) -> dict[int, FitResult]:
    """Every seed's FitResult (heads and config) from the model's heads.npz bytes."""
    with np.load(io.BytesIO(data)) as arrays:
        seeds = seeds_of(arrays.files)
        return {seed: FitResult.from_heads(
            arrays, FitConfig(**json.loads(str(arrays[f"seed{seed}/config"]))), f"seed{seed}/")
            for seed in seeds}


def _signature(encoder: str | None, dim: int, best_seed: int):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = [ColSpec("string", "text")] if encoder else \
        [ColSpec("float", f"h{i}") for i in range(dim)]
    return ModelSignature(Schema(inputs), Schema([ColSpec("double", n) for n in OUTPUTS]),
                          ParamSchema([ParamSpec("seed", "long", best_seed)]))


def log_reward_model(uri: str, run_id: str, results: dict[int, FitResult], best_seed: int,
                     encoder: str | None, example, *, experiment_id: str | None = None,
                     params: dict[str, str] | None = None) -> str:
    """Log the trial's reward as pyfunc model `reward` of run `run_id`; returns its model URI.

    `example`: a few input rows (texts, or an (n, d) embedding array) for the input example.
    `experiment_id` (the run's; read from the run when not given) and `params` (the trial's
    configuration, shown on the model's page) save a read of the run.

    What MLflow's Model.log does, in fewer steps: the LoggedModel made in the run's experiment
    and linked as the run's output, its files uploaded, then READY (FAILED if that fails).
    The files are what mlflow.pyfunc.save_model writes; for a given encoder, width and input
    example they differ between trials only in the heads and a few fields of MLmodel (run,
    model id, time, size, best seed), so save_model runs once per process for them
    (`_pyfunc_files`) and each trial writes that copy with its own heads and MLmodel. Model.log
    took ~50 ms a trial here, re-saving the same files and reading the run back for metrics
    to link to the model (none: it is logged before them). Linking the final metrics (a
    model_id on each in `log_run`'s batch) was tried and cost ~10 ms a trial: not done.
    tests/test_models.py checks the files against save_model's, so an MLflow upgrade that
    changes them fails there; tests/study/test_study.py loads every trial's model, predicts,
    and sends its serving input example through mlflow's serving path.
    """
    from mlflow.entities import LoggedModelStatus

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # remote uploads
    dim = len(next(iter(results.values())).theta_D)
    mlflow_client = client(uri)  # WAL and schema for a SQLite store, as every other fairl write
    if experiment_id is None:
        experiment_id = mlflow_client.get_run(run_id).info.experiment_id
    # Made here, in the run's experiment: MLflow's runs table lists, in its Models column, the
    # models of the run's own experiment whose source run it is.
    model = start_logged_model(uri, experiment_id, run_id, ARTIFACT, params or {})
    try:
        files = model_files(encoder, dim, example, results, best_seed,
                            run_id=run_id, model_id=model.model_id,
                            artifact_location=model.artifact_location)
        # A local artifact folder (the default store) is written directly; it stays PENDING,
        # not READY, until every file is there.
        if (target := local_dir(model.artifact_location)) is not None:
            write_files(files, target)
        else:
            with tempfile.TemporaryDirectory() as folder:
                write_files(files, Path(folder))
                mlflow_client.log_model_artifacts(model.model_id, folder)
    except Exception:
        mlflow_client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    mlflow_client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return f"models:/{model.model_id}"


def model_files(encoder: str | None, dim: int, example, results: dict[int, FitResult],
                best_seed: int, *, run_id: str | None = None, model_id: str | None = None,
                artifact_location: str | None = None) -> dict[str, bytes]:
    """The files of the reward model (path in the model folder -> bytes), as
    mlflow.pyfunc.save_model writes them for these heads, with MLmodel's run, model id and
    artifact location set as Model.log sets them."""
    saved, size, heads_path = _pyfunc_files(encoder, dim, _example_key(example, encoder))
    heads = heads_bytes(results)
    # MLflow's own MLmodel (save_model wrote it): libyaml's safe loader, 0.4 ms against 3 ms
    mlmodel = Model.from_dict(yaml.load(saved["MLmodel"], Loader=_SAFE_LOADER))
    mlmodel.run_id, mlmodel.model_id = run_id, model_id
    mlmodel.model_uuid = model_id or uuid.uuid4().hex
    mlmodel.artifact_path = artifact_location
    mlmodel.utc_time_created = str(datetime.datetime.now(datetime.UTC)
                                   .replace(tzinfo=None))
    mlmodel.signature = _signature(encoder, dim, best_seed)
    mlmodel.metadata = _metadata(encoder, best_seed, results)
    mlmodel.flavors[mlflow.pyfunc.FLAVOR_NAME][MODEL_CONFIG] = {"best_seed": best_seed}
    # save_model's size: every file but the environment's and MLmodel, before they are written.
    mlmodel.model_size_bytes = size - len(saved[heads_path]) + len(heads)
    # Model.to_yaml's text (its safe_dump, default_flow_style=False) by libyaml's emitter:
    # 0.3 ms against 2 ms a trial; tests/test_models.py checks the two texts are the same
    text = yaml.dump(mlmodel.to_dict(), Dumper=_SAFE_DUMPER, default_flow_style=False)
    return {**saved, heads_path: heads, "MLmodel": text.encode()}


def _metadata(encoder: str | None, best_seed: int, results: dict[int, FitResult]) -> dict:
    return {"encoder": encoder or "none", "best_seed": best_seed, "seeds": sorted(results)}


def _example_key(example, encoder: str | None) -> tuple:
    """A hashable form of the input example rows: texts (a model with an encoder), or an
    (n, d) embedding array."""
    if encoder:
        return ("texts", tuple(str(text) for text in example))
    array = np.asarray(example, np.float32)
    return ("array", array.shape, array.tobytes())


@functools.lru_cache(maxsize=8)
def _pyfunc_files(encoder: str | None, dim: int, example: tuple
                  ) -> tuple[dict[str, bytes], int, str]:
    """mlflow.pyfunc.save_model's files of a reward model with this encoder, width and input
    example: (path -> bytes, MLmodel's model_size_bytes, the heads' path). Saved with a
    placeholder head set (seed 0, zeros); `model_files` puts each trial's in."""
    if example[0] == "texts":
        frame = pd.DataFrame({"text": list(example[1])})
    else:
        array = np.frombuffer(example[2], np.float32).reshape(example[1])
        frame = pd.DataFrame(array, columns=[f"h{i}" for i in range(dim)])
    placeholder = {0: FitResult(np.zeros(dim, np.float32), 0.0, np.zeros(dim, np.float32), 0.0,
                                FitConfig(seed=0), [], np.zeros(0))}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(), \
            _quiet(logging.getLogger("mlflow.pyfunc")):
        # Its notes on cloudpickle and on predict's type hints say nothing about this model.
        warnings.simplefilter("ignore", UserWarning)
        heads = Path(folder, HEADS_FILE)
        heads.write_bytes(heads_bytes(placeholder))
        path = Path(folder, "model")
        mlflow.pyfunc.save_model(
            path, python_model=RewardModel(encoder, dim, 0), artifacts={"heads": str(heads)},
            signature=_signature(encoder, dim, 0), input_example=frame,
            model_config={"best_seed": 0},
            # Named, not inferred: inference imports the model in a subprocess (seconds).
            pip_requirements=[f"mlflow=={mlflow.__version__}", "numpy", "pandas"],
            metadata=_metadata(encoder, 0, placeholder))
        files = {str(file.relative_to(path)): file.read_bytes()
                 for file in sorted(path.rglob("*")) if file.is_file()}
        mlmodel = Model.load(path)
    heads_path = mlmodel.flavors[mlflow.pyfunc.FLAVOR_NAME]["artifacts"]["heads"]["path"]
    return files, mlmodel.model_size_bytes, heads_path


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_reward(model_uri: str, tracking_uri: str | None = None) -> RewardModel:
    """The RewardModel behind `runs:/<id>/reward`, `models:/<name>@<alias>` or a folder."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if tracking_uri:
        client(tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(resolve_model_uri(model_uri, tracking_uri))
    inner = model.unwrap_python_model()
    if not isinstance(inner, RewardModel):
        raise TypeError(f"{model_uri}: not a fairl reward model ({type(inner).__name__})")
    return inner


def resolve_model_uri(model_uri: str, tracking_uri: str | None = None) -> str:
    """`runs:/<id>/reward` -> the logged model's `models:/m-...` (MLflow 3 keeps models apart
    from run artifacts); other URIs unchanged."""
    if not (model_uri.startswith("runs:/") and model_uri.rstrip("/").endswith(f"/{ARTIFACT}")):
        return model_uri
    run_id = model_uri.removeprefix("runs:/").split("/")[0]
    run = client(tracking_uri or mlflow.get_tracking_uri()).get_run(run_id)
    logged = run.data.tags.get("reward_model_uri")
    if not logged:
        raise ValueError(f"run {run_id} has no reward model (tag reward_model_uri); runs of "
                         "fairl before the reward models have rewards.npz only")
    return logged


def score(model_uri: str, texts: list[str], tracking_uri: str | None = None,
          seed: int | None = None) -> pd.DataFrame:
    """R, R_D, R_F of `texts` under a logged reward model."""
    started = time.perf_counter()
    model = load_reward(model_uri, tracking_uri)
    out = model.predict(None, pd.DataFrame({"text": texts}),
                        None if seed is None else {"seed": seed})
    out.attrs["seconds"] = time.perf_counter() - started
    return out


def register_reward(uri: str, run_id: str, name: str, alias: str | None = None) -> str:
    """Register run `run_id`'s reward model as a new version of `name`; returns the version."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    client(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    version = mlflow.register_model(resolve_model_uri(f"runs:/{run_id}/{ARTIFACT}", uri), name,
                                    tags={"source_run_id": run_id})
    if alias:
        client(uri).set_registered_model_alias(name, alias, version.version)
    return str(version.version)
