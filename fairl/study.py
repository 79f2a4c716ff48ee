"""Studies: Optuna searches over FitConfig, described by studies/*.yaml, tracked in MLflow.

A study file names the world, a base FitConfig, optional named `variants` (presets of
FitConfig overrides, searched as the categorical parameter `variant`), a search space,
the sampler (tpe, random, grid), the trial count, the seeds, the objective metric(s) and
tags. It is validated whole (pydantic + the cross-field checks below) before any storage,
trial or run is created; every error names the file and the field. Example:

    world: {name: planted, options: {n_train: 2000, d: 64}}   # any registered world
    fit: {rounds: 100}                        # base FitConfig (fairl/irl/config.py)
    variants:                                 # searched as `variant` unless listed
      standard_irl: {failure_mode: none, dual_path: false}
      fa_irl: {}
    search:                                   # FitConfig fields, world.options.<x>,
      objective: [max_margin, max_entropy]    #   world.compose.n / .tnt_fraction;
      lr: {type: float, low: 0.01, high: 0.2, log: true}   # a list = categorical
    sampler: {type: tpe, seed: 0}             # tpe | random | grid (lists only)
    trials: 20                                # grid: defaults to the grid size
    seeds: [0, 1, 2]
    objectives: [{metric: test_f1, direction: maximize}]
    ablation: none
    tags: {paper: table 1}

A trial is one configuration evaluated on every seed of `seeds`; its Optuna value is the
mean over seeds of each objective metric (several metrics = a multi-objective study).
MLflow: one experiment per study, one parent run per launch, one child run per trial with
the per-seed numbers inside it (fairl/tracking.py), so the runs table compares
configurations directly. Trial and run point at each other: the trial's user attr
`mlflow_run_id`, the run's tags `trial_number` / `optuna_study`.

Storage: a JournalFileBackend file `mlruns/optuna.journal` by default (several processes on
one machine; appends without fsync, see journal_file), or any RDB URL (`postgresql://...`
for several machines) with Optuna's heartbeat. Workers (`--workers K`) are processes.

Resume, kills and orphans. Each worker loops: take the study lock, reap, count, and ask
for one trial, releasing the lock once the trial exists (so two workers never both take the
last slot, and a grid never hands one configuration to two live trials). The lock is an
fcntl lock beside a journal or SQLite file, a PostgreSQL/MySQL advisory lock otherwise; a
dead holder releases it. Reaping: a RUNNING trial whose worker process (host:pid:start,
recorded before the lock is released) is dead on this host, or whose RDB heartbeat went
stale, is set FAIL (user attr `fairl_killed`) and re-queued as a WAITING copy with the same
parameters and grid slot (system attrs `failed_trial`, `retry_history`, as Optuna's
RetryHeartbeatStaleTrialCallback does), up to MAX_RETRY times. A trial interrupted by
Ctrl-C/SIGTERM is re-queued the same way. A study is done when COMPLETE trials plus FAIL
trials that were not re-queued (errors such as a diverged fit, which would fail again)
reach the trial count. At each launch (start and end), MLflow runs still RUNNING whose
trial is no longer running (or whose launcher died) are set KILLED with the reason in
their `error` tag.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from fairl import tracking
from fairl.config import STRICT, ConfigError
from fairl.paths import mlruns_dir

METRICS = tuple(f"{split}_{name}" for split in ("test", "train") for name in tracking.FINAL_METRICS)
MAX_RETRY = 3  # re-queues of a configuration whose worker died, before it counts as failed
HEARTBEAT_SECONDS = 10  # RDB storages: trial heartbeat, and stale after GRACE_SECONDS
GRACE_SECONDS = 30
Scalar = str | bool | int | float | None


# --- the study file ----------------------------------------------------------------------------

@dataclass(config=STRICT)
class FloatParam:
    """A float in [low, high], optionally log-scaled or stepped."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self):
        _check_range(self.low, self.high, self.log, self.step)
        return self


@dataclass(config=STRICT)
class IntParam:
    """An integer in [low, high], optionally log-scaled or stepped."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self):
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self


@dataclass(config=STRICT)
class CategoricalParam:
    """One of `choices` (a plain YAML list is shorthand for this)."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list) -> list:
        if len({json.dumps(choice) for choice in choices}) != len(choices):
            raise ValueError("choices must be distinct")
        return choices


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be < high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log scale needs low > 0 (got {low})")
    if log and step is not None:
        raise ValueError("log and step cannot be combined")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


@dataclass(config=STRICT)
class SamplerSpec:
    """Which Optuna sampler proposes configurations."""

    type: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="tpe / random search, or grid: every combination of `search` once")
    seed: int = Field(0, ge=0, description="sampler seed (grid: the order of the grid)")


@dataclass(config=STRICT)
class ObjectiveSpec:
    """A metric the study optimises, averaged over seeds."""

    metric: Literal[METRICS] = Field(description="train_/test_ + accuracy, f1, roc_auc, ...")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: minimize starc, maximize the others")

    def __post_init__(self):
        if self.direction is None:
            self.direction = "minimize" if self.metric.endswith("starc") else "maximize"


@dataclass(config=STRICT)
class StudySpec:
    """A study file (studies/*.yaml), validated."""

    world: dict[str, Any] = Field(
        description="the data: {name, options, compose} as fairl.experiment.WorldSpec")
    objectives: list[ObjectiveSpec] = Field(min_length=1, description="what the study optimises")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1, description="every configuration is fitted once per seed")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                             description="Optuna study and MLflow experiment; default: file stem")
    description: str = Field("", description="what the study shows (free text)")
    ablation: str = Field("none", description="the ablation this study is, as the run tag")
    fit: dict[str, Any] = Field(default_factory=dict, description="base FitConfig values")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named FitConfig overrides, searched as `variant`")
    search: dict[str, Param] = Field(default_factory=dict, description="the search space")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec, description="the sampler")
    trials: int | None = Field(None, ge=1, description="trial count; grid default: its size")
    tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow run tags")
    top_failures: int = Field(20, ge=0, description="pairs per seed in failures.csv")
    curve_points: int | None = Field(
        None, ge=1, description="cap on logged rounds per curve (None: every round); "
                                "history.csv always has every round")

    @field_validator("search", mode="before")
    @classmethod
    def _list_is_categorical(cls, search: Any) -> Any:
        if isinstance(search, dict):
            return {key: {"type": "categorical", "choices": value} if isinstance(value, list)
                    else value for key, value in search.items()}
        return search

    @field_validator("fit", mode="before")
    @classmethod
    def _no_seed(cls, fit: Any) -> Any:
        if isinstance(fit, dict) and "seed" in fit:
            raise ValueError("`seed` is not set here: list the seeds under `seeds`")
        return fit

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds

    @field_validator("objectives")
    @classmethod
    def _distinct_metrics(cls, objectives: list[ObjectiveSpec]) -> list[ObjectiveSpec]:
        if len({objective.metric for objective in objectives}) != len(objectives):
            raise ValueError("each metric may appear once")
        return objectives

    @property
    def directions(self) -> list[str]:
        return [objective.direction for objective in self.objectives]

    @property
    def metrics(self) -> list[str]:
        return [objective.metric for objective in self.objectives]


@dataclasses.dataclass
class Study:
    """A validated study file: the spec, where it came from, and its derived search space."""

    spec: StudySpec
    path: str
    raw: dict[str, Any]  # the YAML mapping as read (workers re-validate it)
    space: dict[str, FloatParam | IntParam | CategoricalParam]  # incl. the implicit `variant`

    @property
    def name(self) -> str:
        return self.spec.name or Path(self.path).stem

    @property
    def trials(self) -> int:
        return self.spec.trials or self.grid_size

    @property
    def grid_size(self) -> int:
        return math.prod(len(param.choices) for param in self.space.values())

    @property
    def needs_compose(self) -> bool:
        return self.spec.world["compose"] is not None

    def fingerprint(self) -> str:
        """Hash of what defines the study's configurations (not its trial count or tags)."""
        keep = {key: self.raw.get(key) for key in
                ("world", "fit", "variants", "search", "sampler", "seeds", "objectives")}
        text = json.dumps(keep, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class _YAML12Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.2), not as a string."""


_YAML12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_study_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a study file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_YAML12Loader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: malformed YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of study fields, got {type(data).__name__}")
    return data


def load_study(path: str | Path, raw: dict[str, Any] | None = None) -> Study:
    """Read and validate a study file (or its already-read mapping `raw`)."""
    path = str(path)
    raw = read_study_file(path) if raw is None else raw
    try:
        spec = StudySpec(**raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, path)) from None
    except TypeError as error:  # e.g. a non-string key at top level
        raise ConfigError(f"{path}: {error}") from None
    try:
        return Study(spec, path, raw, _check_study(spec))
    except ConfigError as error:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(error).splitlines())) \
            from None


def _describe(error: ValidationError, path: str) -> str:
    lines = []
    for problem in error.errors():
        loc = list(problem["loc"])
        if loc[:1] == ["search"] and len(loc) > 2 and loc[2] in ("float", "int", "categorical"):
            del loc[2]  # the union member pydantic tried: noise to the reader
        location = ".".join(str(part) for part in loc) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        got = problem.get("input")
        shown = "" if problem["type"] == "missing" or isinstance(got, dict | list) \
            else f" (got {got!r})"
        lines.append(f"{path}: {location}: {message}{shown}")
    return "\n".join(lines)


def _fit_fields() -> set[str]:
    from fairl.irl import FitConfig

    return {field.name for field in dataclasses.fields(FitConfig)} - {"seed"}


def _check_study(spec: StudySpec) -> dict[str, Any]:
    """Cross-field checks pydantic cannot see; returns the search space incl. `variant`."""
    from fairl.config import build
    from fairl.experiment import WorldSpec, load_world_spec_check

    world = build(WorldSpec, spec.world, "world")
    load_world_spec_check(world, "world")
    spec.world = dataclasses.asdict(world)  # with defaults filled in
    fit_fields = _fit_fields()
    _fit_config(spec.fit, {}, "fit")
    for name, overrides in spec.variants.items():
        _fit_config({**spec.fit, **overrides}, overrides, f"variants.{name}")

    space = dict(spec.search)
    if spec.variants and "variant" not in space:
        space = {"variant": CategoricalParam(type="categorical", choices=list(spec.variants)),
                 **space}
    for key, param in space.items():
        where = f"search.{key}"
        if key == "variant":
            if not spec.variants:
                raise ConfigError(f"{where}: no `variants` are defined to choose from")
            if not isinstance(param, CategoricalParam):
                raise ConfigError(f"{where}: must be a list of variant names")
            unknown = [choice for choice in param.choices if choice not in spec.variants]
            if unknown:
                raise ConfigError(f"{where}: unknown variant(s) {unknown}; "
                                  f"defined: {', '.join(spec.variants)}")
        elif key == "seed":
            raise ConfigError(f"{where}: the seed is not searched: list the seeds under `seeds`")
        elif key in fit_fields:
            clash = [name for name, overrides in spec.variants.items() if key in overrides]
            if clash:
                raise ConfigError(f"{where}: also set by variant(s) {clash}; set it in one place")
        elif key.startswith("world.options."):
            pass
        elif key.startswith("world.compose."):
            if spec.world["compose"] is None:
                raise ConfigError(f"{where}: searching the composition needs a base "
                                  "`world.compose: {{n, tnt_fraction}}`")
            if key.removeprefix("world.compose.") not in ("n", "tnt_fraction"):
                raise ConfigError(f"{where}: world.compose has only n and tnt_fraction")
        else:
            raise ConfigError(f"{where}: unknown parameter; expected a FitConfig field "
                              f"({', '.join(sorted(fit_fields))}), world.options.<name>, "
                              "world.compose.n, world.compose.tnt_fraction or variant")
        # Every value a parameter can take must make a valid configuration on its own.
        values = param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        for value in values:
            try:
                resolve(spec, {key: value}, base_only=True)
            except ConfigError as error:
                raise ConfigError(f"{where}: value {value!r} is invalid:\n  {error}") from None

    if spec.sampler.type == "grid":
        for key, param in space.items():
            if not isinstance(param, CategoricalParam):
                raise ConfigError(f"search.{key}: the grid sampler needs a list of values, "
                                  f"not a {param.type} range")
        size = math.prod(len(param.choices) for param in space.values())
        if spec.trials is not None and spec.trials > size:
            raise ConfigError(f"trials: {spec.trials} exceeds the grid size {size} "
                              "(a grid runs each configuration once)")
        if size <= 10_000:  # every point of the grid is a valid configuration
            names = list(space)
            for point in itertools.product(*(space[name].choices for name in names)):
                try:
                    resolve(spec, dict(zip(names, point)))
                except ConfigError as error:
                    raise ConfigError(f"search: grid point {dict(zip(names, point))} is "
                                      f"invalid:\n  {error}") from None
    else:
        if spec.trials is None:
            raise ConfigError(f"trials: required for the {spec.sampler.type} sampler")
        if not space:
            raise ConfigError(f"search: the {spec.sampler.type} sampler needs a search space "
                              "(use `sampler: {type: grid}` to run one configuration)")
    return space


def _fit_config(values: dict[str, Any], overrides: dict[str, Any], where: str):
    from fairl.config import build
    from fairl.irl import FitConfig

    if "seed" in overrides:
        raise ConfigError(f"{where}.seed: the seed is not set here: list the seeds under `seeds`")
    return build(FitConfig, values, where if overrides else "fit")


# --- one trial's configuration -----------------------------------------------------------------

@dataclasses.dataclass
class TrialConfig:
    """The resolved configuration of one trial (every seed shares it)."""

    variant: str | None
    world: dict[str, Any]  # WorldSpec as plain data
    fit: dict[str, Any]  # FitConfig as plain data, without the seed
    seeds: list[int]

    @property
    def config_id(self) -> str:
        """Hash of the configuration without seeds: equal configurations, equal ids."""
        text = json.dumps({"world": self.world, "fit": self.fit}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def as_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "seeds": self.seeds, "world": self.world, "fit": self.fit}


def resolve(spec: StudySpec, params: dict[str, Any], base_only: bool = False) -> TrialConfig:
    """Base config < variant < searched params -> a validated TrialConfig (ConfigError if not)."""
    from fairl.config import build
    from fairl.experiment import WorldSpec, load_world_spec_check
    from fairl.irl import FitConfig

    params = dict(params)
    variant = params.pop("variant", None)
    fit_values = {**spec.fit, **(spec.variants.get(variant, {}) if variant else {})}
    world = json.loads(json.dumps(spec.world))
    for key, value in params.items():
        if key.startswith("world.options."):
            world["options"][key.removeprefix("world.options.")] = value
        elif key.startswith("world.compose."):
            world["compose"][key.removeprefix("world.compose.")] = value
        else:
            fit_values[key] = value
    where = f"variant {variant}" if variant else "fit"
    fit = build(FitConfig, fit_values, where if not base_only else "fit")
    if any(key.startswith("world.") for key in params):
        world_spec = build(WorldSpec, world, "world")
        load_world_spec_check(world_spec, "world")
    fit_dict = dataclasses.asdict(fit)
    fit_dict.pop("seed")
    return TrialConfig(variant, world, fit_dict, list(spec.seeds))


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    """Ask the Optuna trial for every parameter of the space."""
    values = {}
    for name, param in space.items():
        if isinstance(param, CategoricalParam):
            values[name] = trial.suggest_categorical(name, param.choices)
        elif isinstance(param, FloatParam):
            values[name] = trial.suggest_float(name, param.low, param.high, log=param.log,
                                               step=param.step)
        else:
            values[name] = trial.suggest_int(name, param.low, param.high, log=param.log,
                                             step=param.step)
    return values


def evaluate(config: TrialConfig, top_failures: int = 20, curve_points: int | None = None):
    """Fit the configuration on every seed; returns (metrics, curves, artifacts, world)."""
    import statistics

    import numpy as np

    from fairl.config import build
    from fairl.experiment import WorldSpec, run_experiment
    from fairl.irl import FitConfig
    from fairl.worlds import load_world

    world_spec = build(WorldSpec, config.world, "world")
    world = load_world(world_spec.name, world_spec.options)
    per_seed: dict[int, dict[str, float]] = {}
    histories, failures, results = {}, {}, {}
    for seed in config.seeds:
        start = time.perf_counter()
        outcome = run_experiment(world_spec, FitConfig(**config.fit, seed=seed), world)
        per_seed[seed] = {**{f"train_{k}": v for k, v in outcome.train_metrics.items()},
                          **{f"test_{k}": v for k, v in outcome.test_metrics.items()},
                          "fit_seconds": time.perf_counter() - start}
        histories[seed] = outcome.result.history
        results[seed] = outcome.result
        train = outcome.train
        margins = outcome.result.reward(train.h_T) - outcome.result.reward(train.h_NT)
        failures[seed] = tracking.top_failures(train, outcome.result.failure_counts,
                                               np.asarray(margins), top_failures)
    metrics = {}
    for key in per_seed[config.seeds[0]]:
        values = [per_seed[seed][key] for seed in config.seeds]
        metrics[key] = statistics.fmean(values)
        if len(values) > 1 and key != "fit_seconds":
            metrics[f"{key}_std"] = statistics.stdev(values)
        for seed in config.seeds:
            metrics[f"seed_{seed}/{key}"] = per_seed[seed][key]
    curves = tracking.mean_curves(list(histories.values()), curve_points)
    artifacts = {"history.csv": tracking.history_csv(histories),
                 "failures.csv": tracking.failures_csv(failures),
                 "rewards.npz": tracking.rewards_npz(results, world.test)}
    return metrics, curves, artifacts, world


# --- storage, lock, reaping ----------------------------------------------------------------------

def default_storage() -> str:
    return str(mlruns_dir() / "optuna.journal")


def resolve_storage(storage: str | None = None) -> str:
    """Flag, then FAIRL_STORAGE, then the journal file mlruns/optuna.journal."""
    return storage or os.environ.get("FAIRL_STORAGE") or default_storage()


def is_rdb(storage: str) -> bool:
    return "://" in storage


def sqlalchemy_url(storage: str) -> str:
    """postgres(ql):// -> the installed driver: SQLAlchemy 2.1 defaults to psycopg 3, which
    fairl does not require (psycopg2-binary is in the dev extras)."""
    scheme, sep, rest = storage.partition("://")
    if scheme in ("postgres", "postgresql"):
        import importlib.util

        driver = "" if importlib.util.find_spec("psycopg") else "+psycopg2"
        return f"postgresql{driver}{sep}{rest}"
    return storage


def open_storage(storage: str):
    """Optuna storage for a URL (RDB, with heartbeat) or a journal file path."""
    import optuna
    from optuna.storages.journal import JournalStorage

    _quiet_optuna()
    if is_rdb(storage):
        return optuna.storages.RDBStorage(
            sqlalchemy_url(storage), engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=requeue)
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(journal_file(str(storage)))


def journal_file(path: str):
    """Optuna's JournalFileBackend without its fsync per write (~4 ms each on this disk, about
    ten writes per trial). Appends stay atomic under the backend's own lock and survive a
    killed process; only an OS crash can drop the last lines (as with SQLite's WAL mode)."""
    from optuna.storages.journal import JournalFileBackend

    class JournalFile(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            self._lock.acquire()
            try:
                with open(self._file_path, "ab") as file:
                    file.write(text.encode("utf-8"))
            finally:
                self._lock.release()

    backend = JournalFile(path)
    if not (hasattr(backend, "_lock") and hasattr(backend, "_file_path")):
        return JournalFileBackend(path)  # the backend changed: use it as it is
    return backend


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures: one line from objective()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_label(storage: str) -> str:
    """The storage URL without a password, for tags and messages."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", storage)


class StudyLock:
    """Cross-process lock around reap + count + ask of one study (released by a dead holder)."""

    def __init__(self, storage: str, study: str):
        self.storage, self.study, self.held = storage, study, False
        self._file = self._connection = None
        self._key = int.from_bytes(hashlib.sha256(f"fairl:{study}".encode()).digest()[:8],
                                   "big", signed=True)
        self.kind = "file"
        if is_rdb(storage):
            scheme = storage.split("://", 1)[0].split("+", 1)[0]
            if scheme == "sqlite":
                path = Path(storage.split("///", 1)[1])
            elif scheme in ("postgresql", "postgres", "mysql", "mariadb"):
                self.kind, path = scheme, None
            else:
                raise ConfigError(f"--storage {storage_label(storage)}: unsupported database "
                                  "(use a journal file, sqlite, postgresql or mysql)")
        else:
            path = Path(storage)
        if path is not None:
            self._path = path.with_name(f".{path.name}.{study}.lock")

    def acquire(self) -> None:
        if self.held:
            return
        if self.kind == "file":
            import fcntl

            self._file = open(self._path, "a")  # noqa: SIM115 (held across calls)
            fcntl.flock(self._file, fcntl.LOCK_EX)
        else:
            self._sql("SELECT pg_advisory_lock(:key)" if self.kind.startswith("postgres")
                      else "SELECT GET_LOCK(:key, -1)")
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self.kind == "file":
            self._file.close()  # closing drops the flock
            self._file = None
        else:
            self._sql("SELECT pg_advisory_unlock(:key)" if self.kind.startswith("postgres")
                      else "SELECT RELEASE_LOCK(:key)")

    def _sql(self, statement: str) -> None:
        import sqlalchemy

        if self._connection is None:
            engine = sqlalchemy.create_engine(sqlalchemy_url(self.storage),
                                              poolclass=sqlalchemy.pool.NullPool,
                                              isolation_level="AUTOCOMMIT")
            self._connection = engine.connect()
        key = self._key if self.kind.startswith("postgres") else f"fairl:{self.study}"[:64]
        self._connection.execute(sqlalchemy.text(statement), {"key": key}).fetchall()

    def close(self) -> None:
        self.release()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *_):
        self.release()


def requeue(study, trial) -> None:
    """Queue a WAITING copy of a killed trial (same params and grid slot), up to MAX_RETRY."""
    import optuna

    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    if len(history) > MAX_RETRY:
        return
    system_attrs = {**trial.system_attrs, "failed_trial": history[0], "retry_history": history}
    system_attrs.pop("fail_reason", None)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params,
        distributions=trial.distributions, system_attrs=system_attrs))


def reap_trials(study) -> list[str]:
    """Fail and re-queue trials whose worker died (or that were interrupted); call under lock."""
    import optuna
    from optuna.trial import TrialState

    messages = []
    optuna.storages.fail_stale_trials(study)  # RDB heartbeat; calls requeue()
    trials = study.get_trials(deepcopy=False)
    requeued = _requeued(trials)
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            worker = trial.user_attrs.get("worker")
            if tracking.worker_alive(worker) is not False:
                continue
            reason = (f"worker {worker} died during the trial" if worker
                      else "worker died before the trial started")
            study._storage.set_trial_user_attr(trial._trial_id, "fairl_killed", reason)
            try:
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        elif (trial.state == TrialState.FAIL and trial.user_attrs.get("fairl_interrupted")
              and trial.number not in requeued):
            reason = "interrupted"
        else:
            continue
        requeue(study, study._storage.get_trial(trial._trial_id))
        messages.append(f"trial {trial.number}: {reason}; re-queued")
    return messages


def reap_runs(uri: str, experiment: str, study) -> list[str]:
    """Set KILLED the MLflow runs left RUNNING by dead workers or launchers."""
    from optuna.trial import TrialState

    states = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    messages = []
    for run in tracking.running_runs(uri, experiment):
        tags = run.data.tags
        if tags.get("kind") == "launch":
            if tracking.worker_alive(tags.get("worker")) is not False:
                continue
            reason = f"launcher {tags.get('worker')} died"
        elif tags.get("kind") != "trial":
            continue  # not a fairl run: leave it alone
        else:
            number = int(tags.get("trial_number", -1))
            trial = states.get(number)
            if trial is not None and trial.state == TrialState.RUNNING:
                continue
            state = trial.state.name if trial is not None else "missing"
            reason = trial.user_attrs.get("fairl_killed") if trial is not None else None
            reason = f"orphaned: Optuna trial {number} is {state}" + (f" ({reason})" if reason
                                                                     else "")
        tracking.kill_run(uri, run.info.run_id, reason)
        messages.append(f"run {run.info.run_id}: {reason}; set KILLED")
    return messages


def _requeued(trials) -> set[int]:
    """Numbers of failed trials whose configuration was queued again."""
    return {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}


@dataclasses.dataclass
class Tally:
    """Trial counts of a study as fairl sees them."""

    complete: int = 0
    failed: int = 0  # FAIL and not re-queued: counts as done
    requeued: int = 0  # FAIL whose configuration was queued again
    running: int = 0
    waiting: int = 0

    @property
    def done(self) -> int:
        return self.complete + self.failed


def tally(trials) -> Tally:
    from optuna.trial import TrialState

    requeued = _requeued(trials)
    counts = Tally()
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            counts.complete += 1
        elif trial.state == TrialState.RUNNING:
            counts.running += 1
        elif trial.state == TrialState.WAITING:
            counts.waiting += 1
        elif trial.number in requeued:
            counts.requeued += 1
        else:
            counts.failed += 1
    return counts


# --- workers -----------------------------------------------------------------------------------

@dataclasses.dataclass
class WorkerContext:
    """Everything a worker process needs (JSON-serialisable)."""

    path: str
    raw: dict[str, Any]
    storage: str
    tracking_uri: str
    experiment: str
    launch_run: str
    target: int
    worker_index: int = 0
    workers: int = 1
    env_tags: dict[str, str] = dataclasses.field(default_factory=dict)


def make_sampler(study: Study, offset: int):
    """The configured sampler; tpe/random seeds move with `offset` so a resumed run differs."""
    import optuna

    sampler = study.spec.sampler
    if sampler.type == "grid":
        space = {name: param.choices for name, param in study.space.items()}
        return optuna.samplers.GridSampler(space, seed=sampler.seed)
    if sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=sampler.seed + offset)
    return optuna.samplers.TPESampler(seed=sampler.seed + offset)


def work(context: WorkerContext, on_trial=None) -> Tally:
    """Run trials until the study reaches its count; `on_trial(tally)` after each."""
    import optuna

    study_def = load_study(context.path, context.raw)
    storage = open_storage(context.storage)
    existing = optuna.load_study(study_name=study_def.name, storage=storage)
    offset = len(existing.get_trials(deepcopy=False)) + 1000 * context.worker_index
    study = optuna.load_study(study_name=study_def.name, storage=storage,
                              sampler=make_sampler(study_def, offset))
    lock = StudyLock(context.storage, study_def.name)
    parent = os.getppid()
    # Everything imported so far (torch, mlflow, sqlalchemy: ~0.5 M objects) leaves the
    # collector's view; full collections otherwise stall MLflow's many small ORM objects.
    gc.freeze()
    try:
        while context.workers == 1 or os.getppid() == parent:
            with lock:
                reap_trials(study)
                counts = tally(study.get_trials(deepcopy=False))
                if counts.waiting == 0 and counts.done + counts.running >= context.target:
                    break
                study.optimize(lambda trial: objective(trial, study_def, context, lock),
                               n_trials=1, catch=(Exception,))
            if on_trial is not None:
                on_trial(tally(study.get_trials(deepcopy=False)))
    finally:
        lock.close()
    return tally(study.get_trials(deepcopy=False))


def objective(trial, study: Study, context: WorkerContext, lock: StudyLock):
    """One trial: resolve, fit every seed, log one MLflow run; returns the mean objective(s)."""
    # Recorded before the lock is released: a RUNNING trial without it has a dead worker.
    trial.set_user_attr("worker", tracking.worker_identity())
    lock.release()
    spec, uri = study.spec, context.tracking_uri
    tags = {"kind": "trial", "study": study.name, "ablation": spec.ablation,
            "trial_number": str(trial.number), "optuna_trial_id": str(trial._trial_id),
            "optuna_study": study.name, "optuna_storage": storage_label(context.storage),
            "worker": tracking.worker_identity(), "seed": ",".join(map(str, spec.seeds)),
            "world": spec.world["name"], **context.env_tags, **spec.tags}
    run_id = tracking.start_run(uri, context.experiment, f"trial-{trial.number:04d}", tags,
                                parent_run_id=context.launch_run)
    trial.set_user_attr("mlflow_run_id", run_id)
    config, run_params, run_tags = None, {}, {}
    try:
        config = resolve(spec, suggest(trial, study.space))
        trial.set_user_attr("config_id", config.config_id)
        run_params = tracking.flatten({"variant": config.variant, "seeds": config.seeds,
                                       "world": config.world, "fit": config.fit})
        run_tags = {"config_id": config.config_id, "method": _method(config),
                    "variant": str(config.variant)}
        metrics, curves, artifacts, world = evaluate(config, spec.top_failures,
                                                     spec.curve_points)
        values = [metrics[metric] for metric in spec.metrics]
        bad = [m for m, v in zip(spec.metrics, values) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"objective metric(s) {bad} are not finite: {values}")
        # One batch: params, final metrics, curves, tags.
        tracking.log_run(uri, run_id, params=run_params, metrics=metrics, curves=curves,
                         tags={**run_tags, "dataset_hash": world.dataset_hash})
        artifacts["config.yaml"] = yaml.safe_dump(config.as_dict(), sort_keys=False)
        for name, text in artifacts.items():
            tracking.log_text(uri, run_id, text, name)
        tracking.end_run(uri, run_id, tracking.FINISHED)
    except Exception as error:
        reason = tracking.error_line(error)
        print(f"{study.name}: trial {trial.number} failed: {reason}", file=sys.stderr)
        trial.set_user_attr("fail_reason", reason[:2000])
        try:
            if config is not None:
                tracking.log_run(uri, run_id, params=run_params, tags=run_tags)
                tracking.log_text(uri, run_id, yaml.safe_dump(config.as_dict(), sort_keys=False),
                                  "config.yaml")
            tracking.fail_run(uri, run_id, error)
        except Exception as logging_error:  # noqa: BLE001 (keep the trial's own error)
            print(f"  (could not mark MLflow run {run_id} FAILED: {logging_error})",
                  file=sys.stderr)
        raise
    except BaseException:  # Ctrl-C / SIGTERM: not the configuration's fault, run it again
        trial.set_user_attr("fairl_interrupted", True)
        tracking.kill_run(uri, run_id, "interrupted (Ctrl-C or SIGTERM); re-queued")
        raise
    return values[0] if len(values) == 1 else values


def _method(config: TrialConfig) -> str:
    from fairl.irl import FitConfig

    return FitConfig(**config.fit).method


def _worker_main() -> None:
    """Entry of a worker process: `python -c ... <context json>`."""
    import signal

    _die_with_parent()
    context = WorkerContext(**json.loads(sys.argv[1]))
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // context.workers))

    def stop(*_):
        raise KeyboardInterrupt  # the trial is failed and re-queued, as on Ctrl-C

    signal.signal(signal.SIGTERM, stop)
    try:
        work(context)
    except KeyboardInterrupt:
        sys.exit(130)


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the launcher dies, so no worker outlives a killed launch."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# --- launching ---------------------------------------------------------------------------------

@dataclasses.dataclass
class LaunchReport:
    """What a launch did and where the study stands."""

    study: str
    target: int
    tally: Tally
    launch_run: str
    experiment: str
    status: str
    messages: list[str]


def open_study(study: Study, storage: str, target: int):
    """Create or load the Optuna study; refuse a study of the same name with another spec."""
    import optuna

    study_obj = optuna.create_study(
        study_name=study.name, storage=open_storage(storage), load_if_exists=True,
        directions=study.spec.directions)
    attrs = study_obj.user_attrs
    fingerprint = study.fingerprint()
    if attrs.get("fairl_fingerprint", fingerprint) != fingerprint:
        raise ConfigError(
            f"{study.path}: study {study.name!r} already exists in {storage_label(storage)} with "
            "a different configuration (world/fit/variants/search/sampler/seeds/objectives); "
            "give the changed study a new `name:` or use another --storage")
    if [d.name.lower() for d in study_obj.directions] != study.spec.directions:
        raise ConfigError(f"{study.path}: objectives: directions differ from the stored study")
    if "fairl_fingerprint" not in attrs:
        study_obj.set_user_attr("fairl_fingerprint", fingerprint)
        study_obj.set_user_attr("fairl_metrics", study.spec.metrics)
        study_obj.set_user_attr("fairl_file", study.path)
    study_obj.set_user_attr("fairl_target", target)
    return study_obj


def run_study(path: str | Path, trials: int | None = None, workers: int = 1,
              storage: str | None = None, tracking_uri: str | None = None,
              progress: bool = True) -> LaunchReport:
    """`fairl study run`: validate, reap leftovers, run trials to the count, report."""
    study = load_study(path)  # every config error surfaces here, before any store is touched
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1 (got {workers})")
    target = trials or study.trials
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials: must be >= 1 (got {trials})")
    if study.spec.sampler.type == "grid" and target > study.grid_size:
        raise ConfigError(f"--trials: {target} exceeds the grid size {study.grid_size} of "
                          f"{study.path} (a grid runs each configuration once)")
    if study.needs_compose:
        try:
            import fairl.data.compose  # noqa: F401
        except ImportError:
            raise ConfigError(f"{study.path}: world.compose: needs fairl.data.compose (the data "
                              "layer's T→NT composition), which this tree does not have yet") \
                from None
    storage = resolve_storage(storage)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    study_obj = open_study(study, storage, target)
    experiment = tracking.experiment_id(
        uri, study.name, {"study_file": study.path, "description": study.spec.description[:5000],
                          "optuna_storage": storage_label(storage)})
    study_obj.set_user_attr("mlflow_experiment_id", experiment)
    study_obj.set_user_attr("mlflow_tracking_uri", storage_label(uri))
    lock = StudyLock(storage, study.name)
    with lock:
        messages = reap_trials(study_obj) + reap_runs(uri, experiment, study_obj)
    lock.close()
    env_tags = tracking.environment_tags()
    launch_run = tracking.start_run(
        uri, experiment, time.strftime("launch-%Y%m%d-%H%M%S"),
        {"kind": "launch", "study": study.name, "ablation": study.spec.ablation,
         "world": study.spec.world["name"], "worker": tracking.worker_identity(),
         "optuna_study": study.name, "optuna_storage": storage_label(storage),
         "workers": str(workers), **env_tags, **study.spec.tags})
    tracking.log_run(uri, launch_run, params={"trials": target, "workers": workers,
                                              "sampler": study.spec.sampler.type})
    tracking.log_text(uri, launch_run, yaml.safe_dump(study.raw, sort_keys=False), "study.yaml")
    context = WorkerContext(str(path), study.raw, storage, uri, experiment, launch_run, target,
                            workers=workers, env_tags=env_tags)
    status = tracking.FAILED
    try:
        problems = _launch(study_obj, context, workers, progress)
        messages += problems
        status = tracking.FAILED if problems else tracking.FINISHED
    except KeyboardInterrupt:
        status = tracking.KILLED
        raise
    finally:
        with lock:
            messages += reap_trials(study_obj) + reap_runs(uri, experiment, study_obj)
        lock.close()
        counts = tally(study_obj.get_trials(deepcopy=False))
        if status == tracking.FINISHED and counts.done < target:
            status = tracking.FAILED  # a worker died; rerunning continues the study
            messages.append(f"study stopped at {counts.done}/{target} trials; rerun to continue")
        summary = {"trials_complete": counts.complete, "trials_failed": counts.failed,
                   "trials_requeued": counts.requeued}
        summary.update(_best_values(study_obj, study.spec.metrics))
        tracking.log_run(uri, launch_run, metrics=summary)
        tracking.end_run(uri, launch_run, status)
    return LaunchReport(study.name, target, counts, launch_run, experiment, status, messages)


def _launch(study_obj, context: WorkerContext, workers: int, progress: bool) -> list[str]:
    """Run the workers (in this process when there is one); returns problems seen."""
    from tqdm import tqdm

    counts = tally(study_obj.get_trials(deepcopy=False))
    bar = tqdm(total=context.target, initial=min(counts.done, context.target),
               desc=study_obj.study_name, unit="trial", disable=not progress, dynamic_ncols=True)

    def show(counts: Tally) -> None:
        bar.n = min(counts.done, context.target)
        bar.set_postfix(failed=counts.failed, running=counts.running, refresh=False)
        bar.refresh()

    try:
        if workers == 1:
            work(context, on_trial=show)
            return []
        processes = []
        for index in range(workers):
            worker = dataclasses.replace(context, worker_index=index)
            processes.append(subprocess.Popen(
                [sys.executable, "-c", "from fairl.study import _worker_main; _worker_main()",
                 json.dumps(dataclasses.asdict(worker))]))
        try:
            while any(process.poll() is None for process in processes):
                time.sleep(0.5)
                show(tally(study_obj.get_trials(deepcopy=False)))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                process.wait()
        show(tally(study_obj.get_trials(deepcopy=False)))
        return [f"worker {index} (pid {process.pid}) exited with {process.returncode}"
                for index, process in enumerate(processes) if process.returncode != 0]
    finally:
        bar.close()


def _best_values(study_obj, metrics: list[str]) -> dict[str, float]:
    from optuna.trial import TrialState

    complete = [t for t in study_obj.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete or len(metrics) != 1:
        return {}
    return {f"best_{metrics[0]}": study_obj.best_value}


# --- list / status -----------------------------------------------------------------------------

def study_status(name_or_path: str, storage: str | None = None) -> str:
    """Done, running, failed and best trial(s) of one study, as text."""
    import optuna

    name = name_or_path
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        name = load_study(name_or_path).name
    storage = resolve_storage(storage)
    if not is_rdb(storage) and not Path(storage).exists():
        raise ConfigError(f"study {name!r}: no study storage at {storage} yet (run a study)")
    try:
        study_obj = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise ConfigError(f"study {name!r}: not found in {storage_label(storage)} "
                          "(fairl study list shows what is there)") from None
    return _describe_study(study_obj, detail=True)


def list_studies(storage: str | None = None) -> str:
    """One line per study in the storage."""
    import optuna

    storage = resolve_storage(storage)
    if not is_rdb(storage) and not Path(storage).exists():
        return f"no studies in {storage} yet"
    storage_obj = open_storage(storage)
    names = optuna.get_all_study_names(storage=storage_obj)
    if not names:
        return f"no studies in {storage_label(storage)} yet"
    return "\n".join(_describe_study(optuna.load_study(study_name=name, storage=storage_obj))
                     for name in names)


def _describe_study(study_obj, detail: bool = False) -> str:
    from optuna.trial import TrialState

    trials = study_obj.get_trials(deepcopy=False)
    counts = tally(trials)
    target = study_obj.user_attrs.get("fairl_target", "?")
    metrics = study_obj.user_attrs.get("fairl_metrics") or [
        f"value{i}" for i in range(len(study_obj.directions))]
    line = (f"{study_obj.study_name}: {counts.done}/{target} done ({counts.complete} complete, "
            f"{counts.failed} failed), {counts.running} running, {counts.waiting} waiting, "
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


# --- command line ------------------------------------------------------------------------------

def cmd_study_run(args) -> int:
    try:
        report = run_study(args.study_file, trials=args.trials, workers=args.workers,
                           storage=args.storage, tracking_uri=args.tracking_uri,
                           progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted: the running trial will be re-queued; rerun the same command to "
              "continue", file=sys.stderr)
        return 130
    for message in report.messages:
        print(f"  {message}")
    counts = report.tally
    print(f"{report.study}: {counts.done}/{report.target} done ({counts.complete} complete, "
          f"{counts.failed} failed); launch run {report.launch_run} {report.status} in MLflow "
          f"experiment {report.experiment}")
    return 0 if report.status == tracking.FINISHED else 1


def cmd_study_list(args) -> int:
    print(list_studies(args.storage))
    return 0


def cmd_study_status(args) -> int:
    print(study_status(args.study, args.storage))
    return 0


def cmd_ui(args) -> int:
    return tracking.serve_ui(tracking.resolve_tracking_uri(args.tracking_uri), args.host, args.port)


def cmd_dashboard(args) -> int:
    from optuna_dashboard import run_server

    storage = resolve_storage(args.storage)
    if not is_rdb(storage) and not Path(storage).exists():
        raise ConfigError(f"--storage {storage}: no study storage yet (run a study first)")
    print(f"optuna-dashboard for {storage_label(storage)} on http://{args.host}:{args.port} "
          "(Ctrl-C to stop)", flush=True)
    run_server(open_storage(storage), host=args.host, port=args.port)
    return 0


def add_study_commands(commands) -> None:
    """`fairl study run|list|status`, `fairl ui`, `fairl dashboard`."""
    storage_help = ("Optuna storage: a journal file path or an RDB URL such as "
                    "postgresql://user@host/db (default: $FAIRL_STORAGE or mlruns/optuna.journal)")
    study = commands.add_parser(
        "study", help="run and inspect Optuna studies (studies/*.yaml)",
        description="Studies are YAML files naming a world, a base FitConfig, variants, a search "
                    "space, sampler, trials, seeds and objective metrics; every trial is one "
                    "MLflow run.")
    study_commands = study.add_subparsers(dest="study_command", metavar="COMMAND", required=True)

    run = study_commands.add_parser(
        "run", help="run a study to its trial count (resumes; reaps killed trials)",
        description="Run (or continue) a study until it has its trial count of finished trials. "
                    "Rerunning continues; trials of killed workers are failed and re-queued.")
    run.add_argument("study_file", metavar="STUDY.yaml")
    run.add_argument("--trials", type=int, help="trial count (default: the file's `trials`)")
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--storage", help=storage_help)
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $FAIRL_TRACKING_URI, "
                                            "$MLFLOW_TRACKING_URI or sqlite mlruns/mlflow.db)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(handler=cmd_study_run)

    listing = study_commands.add_parser("list", help="studies in the storage, with counts")
    listing.add_argument("--storage", help=storage_help)
    listing.set_defaults(handler=cmd_study_list)

    status = study_commands.add_parser("status", help="done, running, failed and best trials")
    status.add_argument("study", metavar="NAME|STUDY.yaml")
    status.add_argument("--storage", help=storage_help)
    status.set_defaults(handler=cmd_study_status)

    ui = commands.add_parser("ui", help="the MLflow UI on the tracking store",
                             description="Serve the MLflow UI (default store mlruns/mlflow.db).")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: the default store)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=cmd_ui)

    dashboard = commands.add_parser("dashboard", help="optuna-dashboard on the study storage")
    dashboard.add_argument("--storage", help=storage_help)
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.set_defaults(handler=cmd_dashboard)
