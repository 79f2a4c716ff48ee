"""Worlds: named sources of embedded preference pairs that fits and studies run on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from fairl.config import STRICT


@dataclass(frozen=True)
class Pairs:
    """Preference pairs as arrays: row i is (aligned output o_T,i, base output o_NT,i)."""

    h_T: np.ndarray  # (n, d) float32 embeddings of the aligned (preferred) outputs
    h_NT: np.ndarray  # (n, d) float32 embeddings of the base outputs
    gt_T: np.ndarray | None = None  # (n,) ground-truth reward r* of o_T
    gt_NT: np.ndarray | None = None  # (n,) ground-truth reward r* of o_NT
    prompt_ids: np.ndarray | None = None  # (n,) prompt of each pair (STARC groups)
    tnt: np.ndarray | None = None  # (n,) bool: base toxic and aligned not (T→NT)
    text_T: list[str] | None = None  # aligned output texts, when the world has text
    text_NT: list[str] | None = None  # base output texts
    prompts: list[str] | None = None  # prompt texts

    def __post_init__(self):
        n = len(self.h_T)
        if self.h_T.shape != self.h_NT.shape or self.h_T.ndim != 2:
            raise ValueError(f"h_T {self.h_T.shape} and h_NT {self.h_NT.shape} must both be (n, d)")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and len(value) != n:
                raise ValueError(f"Pairs.{field.name} has {len(value)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.h_T)

    def subset(self, index: np.ndarray) -> Pairs:
        """Rows `index` (integer array or boolean mask) of every field."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                values[field.name] = None
            elif isinstance(value, list):
                values[field.name] = [value[i] for i in index]
            else:
                values[field.name] = value[index]
        return Pairs(**values)


@dataclass(frozen=True)
class World:
    """Train and held-out test pairs of one named world, with its content hash."""

    name: str
    train: Pairs
    test: Pairs
    dataset_hash: str
    info: dict = dataclasses.field(default_factory=dict)


def _planted(options: dict) -> World:
    from fairl.data.planted import PlantedConfig, make_planted

    return make_planted(PlantedConfig(**options))


def _planted_options(options: dict, where: str) -> None:
    from fairl.config import build
    from fairl.data.planted import PlantedConfig

    build(PlantedConfig, options, where)


@pydantic_dataclass(config=STRICT)
class PairSetWorldOptions:
    """A world made of a saved PairSet (texts + scores) and a frozen encoder."""

    path: str | None = Field(None, description="PairSet folder; default: the embedded world")
    encoder: Literal["minilm", "smollm2-meanpool"] = Field(
        "minilm", description="frozen encoder h(o) of the outputs")
    train_splits: list[str] = Field(default_factory=lambda: ["train"],
                                    description="splits the reward is fitted on")
    test_split: str = Field("test", description="held-out split the metrics are reported on")


def _pairset_world_options(options: dict, where: str, default_path: bool):
    from pathlib import Path

    from fairl.config import ConfigError, build
    from fairl.data.build import DEFAULT_WORLD_DIR

    values = build(PairSetWorldOptions, options, where)
    if values.path is None and not default_path:
        raise ConfigError(f"{where}.path: a PairSet folder is required for this world")
    path = Path(values.path) if values.path else DEFAULT_WORLD_DIR
    if not (path / "card.json").is_file():
        hint = " (build it: fairl world build)" if values.path is None else ""
        raise ConfigError(f"{where}.path: no PairSet at {path}{hint}")
    return values, path


def _text_world(options: dict, default_path: bool) -> World:
    from fairl.data.pairset import PairSet, to_world

    values, path = _pairset_world_options(options, "world.options", default_path)
    pairset = PairSet.load(path)
    return to_world(pairset, values.encoder, train_splits=tuple(values.train_splits),
                    test_split=values.test_split)


# name -> (loader(options) -> World, checker(options, where) raising ConfigError)
WORLDS = {
    "planted": (_planted, _planted_options),
    # the embedded default: base vs RLHF-detoxified SmolLM2 outputs, committed in the repo
    "default": (lambda options: _text_world(options, True),
                lambda options, where: _pairset_world_options(options, where, True)),
    # any PairSet folder built by `fairl world build` (e.g. the hub setting)
    "pairset": (lambda options: _text_world(options, False),
                lambda options, where: _pairset_world_options(options, where, False)),
}

_loaded: dict[str, World] = {}


def check_world_options(name: str, options: dict, where: str) -> None:
    """Validate a world's options without loading it (errors name `where`.field)."""
    WORLDS[name][1](options, where)


def load_world(name: str, options: dict | None = None) -> World:
    """Load a world by name; memoised per (name, options) within the process."""
    import json

    from fairl.config import ConfigError

    if name not in WORLDS:
        raise ConfigError(f"world.name: unknown world {name!r}; known: {', '.join(WORLDS)}")
    options = options or {}
    key = f"{name}:{json.dumps(options, sort_keys=True, default=str)}"
    if key not in _loaded:
        check_world_options(name, options, "world.options")
        _loaded[key] = WORLDS[name][0](options)
    return _loaded[key]
