"""The study file: a search over FitConfig on a world, validated whole before any work.

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
    objectives: [{metric: val_f1, direction: maximize}]
    select_on: validation                     # default; `test` allows test_* objectives
    data_resample: none                       # or bootstrap: seed s also resamples the
    ablation: none                            #   training prompts (fairl.data.resample)
    tags: {paper: table 1}
    verdict_metrics: [test_starc]             # default: every test metric gets a verdict

A trial is one configuration evaluated on every seed of `seeds` (`resolve` gives its
`TrialConfig`); its Optuna value is the mean over seeds of each objective metric. Every
trial logs train_, val_ and test_ metrics; a study selects on the validation split (val_*
objectives) unless it says `select_on: test`, so the test split only reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from fairl.config import STRICT, ConfigError, build, describe_validation_error, load_yaml
from fairl.data.resample import RESAMPLES
from fairl.experiment import WorldSpec, load_world_spec_check
from fairl.irl.config import FitConfig
from fairl.runs.write import FINAL_METRICS, SPLITS

METRICS = tuple(f"{split}_{name}" for split in SPLITS for name in FINAL_METRICS)
TEST_METRICS = tuple(f"test_{name}" for name in FINAL_METRICS)
Scalar = str | bool | int | float | None


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
class PrunerSpec:
    """Optuna pruning: a trial reports its objective every `every` rounds and may stop early.

    The reported value at global round k (seed i's round t: k = i * rounds + t + 1) is the
    mean of the objective over the seeds finished so far and the current seed's heads; a
    pruned trial is PRUNED in Optuna and a FINISHED MLflow run tagged `pruned_at_round`.
    """

    type: Literal["none", "median", "successive_halving", "hyperband"] = Field(
        "none", description="none, or optuna.pruners.MedianPruner / SuccessiveHalvingPruner / "
                            "HyperbandPruner")
    every: int = Field(20, ge=1, description="rounds between two reports (trial.report)")
    startup_trials: int = Field(5, ge=0, description="median: trials never pruned, first")
    warmup_rounds: int = Field(0, ge=0, description="median: global rounds before pruning")
    min_resource: int | None = Field(
        None, ge=1, description="successive_halving/hyperband: global rounds before the first "
                                "rung (default: `every`)")
    reduction_factor: int = Field(3, ge=2, description="successive_halving/hyperband: η")


@dataclass(config=STRICT)
class ObjectiveSpec:
    """A metric the study optimises, averaged over seeds."""

    metric: Literal[METRICS] = Field(
        description="train_/val_/test_ + accuracy, f1, roc_auc, ...; test_ needs select_on: test")
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
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.=,+@-]*$",
                             description="Optuna study and MLflow experiment; default: file stem "
                                         "(@<world id> appended on another world)")
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
    verdict_metrics: list[Literal[TEST_METRICS]] | None = Field(
        None, min_length=1, description="test metrics the launch's verdicts bootstrap "
        "(fairl.study.verdicts; None: all five); a STARC map needs only test_starc")
    select_on: Literal["validation", "test"] = Field(
        "validation", description="the split objectives select on; `test` (flagged in the "
                                  "report) is needed for a test_* objective")
    data_resample: Literal[RESAMPLES] = Field(
        "none", description="bootstrap: seed s also resamples the training prompts with "
                            "default_rng(s), so seeds replicate the data too")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec,
                               description="early stopping of poor trials (default: none)")
    batch: int = Field(1, ge=1, le=1024, description="trials asked at once and fitted in one "
                       "pass, all their seeds (fairl.study.batch); 1: one trial at a time")

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
        if "data_resample" in self.raw:  # absent: the fingerprint of older study files
            keep["data_resample"] = self.raw["data_resample"]
        text = json.dumps(keep, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_study(path: str | Path, raw: dict[str, Any] | None = None) -> Study:
    """Read and validate a study file (or its already-read mapping `raw`)."""
    path = str(path)
    raw = load_yaml(path) if raw is None else raw
    try:
        spec = StudySpec(**raw)
    except ValidationError as error:
        raise ConfigError(describe_study_error(error, path)) from None
    except TypeError as error:  # e.g. a non-string key at top level
        raise ConfigError(f"{path}: {error}") from None
    try:
        return Study(spec, path, raw, _check_study(spec))
    except ConfigError as error:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(error).splitlines())) \
            from None


def describe_study_error(error: ValidationError, path: str) -> str:
    """`path: field.sub: message` lines, without the union member pydantic tried in `search`."""
    lines = []
    for line in describe_validation_error(error, "").splitlines():
        for member in ("float", "int", "categorical"):  # search.<key>.<member>.low -> .low
            line = line.replace(f".{member}.", ".", 1) if line.startswith("search.") else line
        lines.append(f"{path}: {line}")
    return "\n".join(lines)


FIT_FIELDS = frozenset(field.name for field in dataclasses.fields(FitConfig)) - {"seed"}


def _check_study(spec: StudySpec) -> dict[str, Any]:
    """Cross-field checks pydantic cannot see; returns the search space incl. `variant`."""
    for index, objective in enumerate(spec.objectives):
        if objective.metric.startswith("test_") and spec.select_on != "test":
            raise ConfigError(
                f"objectives.{index}.metric: {objective.metric} selects configurations on the "
                f"test split; optimise val_{objective.metric.removeprefix('test_')} (the "
                "validation split), or say `select_on: test` to do it knowingly")
    if spec.pruner.type != "none" and len(spec.objectives) > 1:
        raise ConfigError(f"pruner.type: {spec.pruner.type} needs one objective (Optuna prunes "
                          f"single-objective studies only; this one has {len(spec.objectives)})")
    if spec.pruner.type != "none" and spec.objectives[0].metric.startswith("train_"):
        raise ConfigError(f"pruner.type: prunes on a val_ (or test_) objective, not "
                          f"{spec.objectives[0].metric}")
    world = build(WorldSpec, spec.world, "world")
    load_world_spec_check(world, "world")
    spec.world = dataclasses.asdict(world)  # with defaults filled in
    _fit_config(spec.fit, {}, "fit")
    for name, overrides in spec.variants.items():
        _fit_config({**spec.fit, **overrides}, overrides, f"variants.{name}")
    space = dict(spec.search)
    if spec.variants and "variant" not in space:
        space = {"variant": CategoricalParam(type="categorical", choices=list(spec.variants)),
                 **space}
    for key, param in space.items():
        _check_parameter(spec, key, param)
    if spec.sampler.type == "grid":
        _check_grid(spec, space)
    elif spec.trials is None:
        raise ConfigError(f"trials: required for the {spec.sampler.type} sampler")
    elif not space:
        raise ConfigError(f"search: the {spec.sampler.type} sampler needs a search space "
                          "(use `sampler: {type: grid}` to run one configuration)")
    return space


def _check_parameter(spec: StudySpec, key: str, param) -> None:
    """What `search.<key>` may name, and that each of its values makes a valid configuration."""
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
    elif key in FIT_FIELDS:
        clash = [name for name, overrides in spec.variants.items() if key in overrides]
        if clash:
            raise ConfigError(f"{where}: also set by variant(s) {clash}; set it in one place")
    elif key.startswith("world.compose."):
        if spec.world["compose"] is None:
            raise ConfigError(f"{where}: searching the composition needs a base "
                              "`world.compose: {{n, tnt_fraction}}`")
        if key.removeprefix("world.compose.") not in ("n", "tnt_fraction"):
            raise ConfigError(f"{where}: world.compose has only n and tnt_fraction")
    elif not key.startswith("world.options."):
        raise ConfigError(f"{where}: unknown parameter; expected a FitConfig field "
                          f"({', '.join(sorted(FIT_FIELDS))}), world.options.<name>, "
                          "world.compose.n, world.compose.tnt_fraction or variant")
    values = param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
    for value in values:
        try:
            resolve(spec, {key: value}, base_only=True)
        except ConfigError as error:
            raise ConfigError(f"{where}: value {value!r} is invalid:\n  {error}") from None


def _check_grid(spec: StudySpec, space: dict[str, Any]) -> None:
    """A grid: lists only, trials within its size, every point a valid configuration."""
    for key, param in space.items():
        if not isinstance(param, CategoricalParam):
            raise ConfigError(f"search.{key}: the grid sampler needs a list of values, "
                              f"not a {param.type} range")
    size = math.prod(len(param.choices) for param in space.values())
    if spec.trials is not None and spec.trials > size:
        raise ConfigError(f"trials: {spec.trials} exceeds the grid size {size} "
                          "(a grid runs each configuration once)")
    if size <= 10_000:  # beyond that, checking every point costs more than it saves
        names = list(space)
        for point in itertools.product(*(space[name].choices for name in names)):
            try:
                resolve(spec, dict(zip(names, point)))
            except ConfigError as error:
                raise ConfigError(f"search: grid point {dict(zip(names, point))} is "
                                  f"invalid:\n  {error}") from None


def _fit_config(values: dict[str, Any], overrides: dict[str, Any], where: str) -> FitConfig:
    if "seed" in overrides:
        raise ConfigError(f"{where}.seed: the seed is not set here: list the seeds under `seeds`")
    return build(FitConfig, values, where if overrides else "fit")


# --- one trial's configuration -----------------------------------------------------------------

@dataclasses.dataclass
class TrialConfig:
    """The resolved configuration of one trial (every seed shares it), typed once."""

    variant: str | None
    world: WorldSpec
    fit: FitConfig  # its seed is a placeholder: `for_seed` sets each seed's
    seeds: list[int]
    data_resample: str = "none"  # fairl.data.resample, applied per seed

    @property
    def fit_values(self) -> dict[str, Any]:
        """The FitConfig as plain data, without the seed (params, config.yaml, config_id)."""
        values = dataclasses.asdict(self.fit)
        values.pop("seed")
        return values

    @property
    def world_values(self) -> dict[str, Any]:
        return dataclasses.asdict(self.world)

    @property
    def config_id(self) -> str:
        """Hash of the configuration without seeds: equal configurations, equal ids."""
        values = {"world": self.world_values, "fit": self.fit_values}
        if self.data_resample != "none":  # kept out otherwise: earlier ids stay the same
            values["data_resample"] = self.data_resample
        text = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def for_seed(self, seed: int) -> FitConfig:
        return dataclasses.replace(self.fit, seed=seed)

    def as_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "seeds": self.seeds, "world": self.world_values,
                "fit": self.fit_values, "data_resample": self.data_resample}


def resolve(spec: StudySpec, params: dict[str, Any], base_only: bool = False) -> TrialConfig:
    """Base config < variant < searched params -> a validated TrialConfig (ConfigError if not)."""
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
    world_spec = build(WorldSpec, world, "world")
    if any(key.startswith("world.") for key in params):
        load_world_spec_check(world_spec, "world")
    return TrialConfig(variant, world_spec, fit, list(spec.seeds), spec.data_resample)


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


