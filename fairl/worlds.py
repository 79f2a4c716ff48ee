"""The registry of named worlds (planted, default, pairset, sir): options checked, loaded, memoised."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from fairl.config import STRICT, ConfigError, build
from fairl.data.planted import PlantedConfig, make_planted
from fairl.data.sir import SirOptions
from fairl.devices import resolve_device
from fairl.pairs import World
from fairl.paths import DEFAULT_WORLD_DIR


def _planted(options: dict) -> World:
    return make_planted(PlantedConfig(**options))


def _planted_options(options: dict, where: str) -> None:
    build(PlantedConfig, options, where)


@pydantic_dataclass(config=STRICT)
class PairSetWorldOptions:
    """A world made of a saved PairSet (texts + scores) and a frozen encoder."""

    path: str | None = Field(None, description="PairSet folder; default: the embedded world")
    encoder: Literal["minilm", "smollm2-meanpool", "base-meanpool"] = Field(
        "minilm", description="frozen encoder h(o) of the outputs; base-meanpool: the mean-pooled "
        "last hidden state of the PairSet's own base LM (card models.base, e.g. pythia-410m)")
    device: str = Field(
        "cpu", description="auto | cpu | cuda | cuda:N for the encoder (fairl.devices); on a GPU "
        "with bf16 the embeddings (and their cache) are bf16 ones")
    train_splits: list[str] = Field(default_factory=lambda: ["train"],
                                    description="splits the reward is fitted on")
    test_split: str = Field("test", description="held-out split the metrics are reported on")
    validation_split: str | None = Field(
        "validation", description="split studies select configurations on (null: none)")


def _pairset_world_options(options: dict, where: str, default_path: bool):
    values = build(PairSetWorldOptions, options, where)
    resolve_device(values.device, f"{where}.device")
    if values.path is None and not default_path:
        raise ConfigError(f"{where}.path: a PairSet folder is required for this world")
    path = Path(values.path) if values.path else DEFAULT_WORLD_DIR
    if not (path / "card.json").is_file():
        hint = " (build it: fairl world build)" if values.path is None else ""
        raise ConfigError(f"{where}.path: no PairSet at {path}{hint}")
    return values, path


def _text_world(options: dict, default_path: bool) -> World:
    from fairl.data.pairset import PairSet, to_world  # heavy: its scorers import torch

    values, path = _pairset_world_options(options, "world.options", default_path)
    pairset = PairSet.load(path)
    splits = [*values.train_splits, values.test_split]
    if values.validation_split is not None:
        if values.validation_split in splits:
            raise ConfigError(f"world.options.validation_split: {values.validation_split!r} "
                              "is also a train or test split")
        if values.validation_split not in pairset.splits:
            raise ConfigError(f"world.options.validation_split: the PairSet at {path} has no "
                              f"split {values.validation_split!r} (null: no validation)")
    encoder = values.encoder
    if encoder == "base-meanpool":
        base = pairset.card.get("models", {}).get("base") or "smollm2-135m-instruct"
        encoder = "smollm2-meanpool" if base == "smollm2-135m-instruct" else f"{base}-meanpool"
    if values.device != "cpu":  # cpu: the encoder object every other caller shares
        from fairl.lm.encode import get_encoder  # heavy: torch, transformers

        encoder = get_encoder(encoder, device=values.device)
    return to_world(pairset, encoder, train_splits=tuple(values.train_splits),
                    test_split=values.test_split, validation_split=values.validation_split)


def _sir_options(options: dict, where: str):
    values = build(SirOptions, options, where)
    path = Path(values.path) if values.path else DEFAULT_WORLD_DIR
    if not (path / "card.json").is_file():
        raise ConfigError(f"{where}.path: no PairSet at {path}")
    return values, path


def _sir_world(options: dict) -> World:
    from fairl.data.pairset import PairSet  # heavy: its scorers import torch
    from fairl.data.sir import make_sir_world

    values, path = _sir_options(options, "world.options")
    pairset = PairSet.load(path)
    encoder = values.encoder
    if encoder == "base-meanpool":
        base = pairset.card.get("models", {}).get("base") or "smollm2-135m-instruct"
        encoder = "smollm2-meanpool" if base == "smollm2-135m-instruct" else f"{base}-meanpool"
    return make_sir_world(pairset, values, encoder)


# name -> (loader(options) -> World, checker(options, where) raising ConfigError)
WORLDS = {
    "planted": (_planted, _planted_options),
    # the embedded default: base vs RLHF-detoxified SmolLM2 outputs, committed in the repo
    "default": (lambda options: _text_world(options, True),
                lambda options, where: _pairset_world_options(options, where, True)),
    # any PairSet folder built by `fairl world build` (e.g. the hub setting)
    "pairset": (lambda options: _text_world(options, False),
                lambda options, where: _pairset_world_options(options, where, False)),
    # a PairSet's base samples re-paired by SIR: r* a linear probe, o_T ~ π* (fairl.data.sir)
    "sir": (_sir_world, _sir_options),
}

_loaded: dict[str, World] = {}


def check_world_options(name: str, options: dict, where: str) -> None:
    """Validate a world's options without loading it (errors name `where`.field)."""
    WORLDS[name][1](options, where)


def _canonical(name: str, options: dict) -> dict:
    """The options as the world reads them: SIR with its defaults filled in, so that {beta: 0.5}
    and {beta: 0.5, misspecification: 0.0} are one world (loaded once)."""
    if name == "sir":
        return dataclasses.asdict(build(SirOptions, options, "world.options"))
    return options


def load_world(name: str, options: dict | None = None) -> World:
    """Load a world by name; memoised per (name, options) within the process."""
    if name not in WORLDS:
        raise ConfigError(f"world.name: unknown world {name!r}; known: {', '.join(WORLDS)}")
    options = options or {}
    key = f"{name}:{json.dumps(_canonical(name, options), sort_keys=True, default=str)}"
    if key not in _loaded:
        check_world_options(name, options, "world.options")
        # read-only: every trial of the process shares it (and fit reuses its D)
        _loaded[key] = WORLDS[name][0](options).freeze()
    return _loaded[key]

