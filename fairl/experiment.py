"""One experiment = a world (optionally composed to a size and T→NT fraction) + one fit + metrics.

Both `fairl fit` and every study trial go through `run_experiment`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic.dataclasses import dataclass

from fairl.config import STRICT, ConfigError, build
from fairl.data.compose import compose_pairs
from fairl.data.resample import resample
from fairl.irl.config import FitConfig
from fairl.metrics import evaluate_reward  # light: sklearn loads at the first evaluation
from fairl.pairs import Pairs, World
from fairl.worlds import WORLDS, check_world_options, load_world

if TYPE_CHECKING:
    from fairl.irl.fit import FitResult


@dataclass(config=STRICT)
class ComposeSpec:
    """Train on exactly n pairs with an exact T→NT fraction (the data layer's compose)."""

    n: int = Field(ge=1, description="training pairs")
    tnt_fraction: float = Field(ge=0, le=1, description="fraction of T→NT pairs among them")


@dataclass(config=STRICT)
class WorldSpec:
    """Which world to load, with its options, and how to compose its training pairs."""

    name: str = Field("planted", description="world name: planted, default, hub")
    options: dict[str, Any] = Field(default_factory=dict, description="world-specific options")
    compose: ComposeSpec | None = Field(None, description="optional exact-size/T→NT training set")


@dataclass(config=STRICT)
class ExperimentConfig:
    """What `fairl fit --config FILE.yaml` reads: a world and a fit."""

    world: WorldSpec = Field(default_factory=WorldSpec, description="the data")
    fit: FitConfig = Field(default_factory=FitConfig, description="the IRL fit")


def experiment_config(values: dict[str, Any], where: str = "config") -> ExperimentConfig:
    """Validate a plain dict (e.g. from YAML) into an ExperimentConfig; errors name the field."""
    config = build(ExperimentConfig, values, where)
    load_world_spec_check(config.world, f"{where}.world")
    return config


def load_world_spec_check(spec: WorldSpec, where: str) -> None:
    """Fail early on an unknown world name or bad options, before any work starts."""
    if spec.name not in WORLDS:
        raise ConfigError(f"{where}.name: unknown world {spec.name!r}; known: {', '.join(WORLDS)}")
    check_world_options(spec.name, spec.options, f"{where}.options")


@dataclasses.dataclass
class Outcome:
    """A fitted reward and its metrics on the training, validation and held-out test pairs."""

    world: World
    train: Pairs  # the (possibly composed and resampled) training pairs
    result: FitResult
    train_metrics: dict[str, float]
    test_metrics: dict[str, float]
    val_metrics: dict[str, float] | None = None  # None: the world has no validation split


def training_pairs(world: World, compose: ComposeSpec | None, seed: int,
                   data_resample: str = "none") -> Pairs:
    """The world's training pairs, composed to (n, tnt_fraction) when asked, then resampled
    (fairl.data.resample: 'bootstrap' redraws the prompts with default_rng(seed))."""
    train = world.train
    if compose is not None:
        train = compose_pairs(train, compose.n, compose.tnt_fraction, seed=seed)
    return resample(train, data_resample, seed)


def run_experiment(spec: WorldSpec, config: FitConfig, world: World | None = None,
                   data_resample: str = "none", monitor=None) -> Outcome:
    """Load (or reuse) the world, compose its training set, fit, evaluate on every split.

    `monitor`: fairl.irl.fit.Monitor, called during the fit (a study's pruning)."""
    from fairl.irl.fit import fit  # heavy: torch; validation above never needs it

    world = world or load_world(spec.name, spec.options)
    train = training_pairs(world, spec.compose, config.seed, data_resample)
    result = fit(train.h_T, train.h_NT, config, train.gt_T, train.gt_NT, monitor=monitor)
    return score(world, train, result)


def score(world: World, train: Pairs, result: FitResult) -> Outcome:
    """A fitted reward's metrics on the training pairs and the world's other splits."""
    validation = None if world.validation is None else evaluate_reward(result.reward,
                                                                        world.validation)
    return Outcome(world, train, result, evaluate_reward(result.reward, train),
                   evaluate_reward(result.reward, world.test), validation)
