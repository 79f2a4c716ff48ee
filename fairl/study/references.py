"""Room to improve: the linear oracle and IRL on ideal labels, for a study's world with r*.

`reference_metrics(spec)` gives, for the study's base world (its full training split, before
any composition or resampling):
* reference_oracle_test_starc: fairl.reference.oracle_starc, ridge of r* on h (train → test),
  the best any linear reward reaches;
* reference_bt_irl_test_starc (and `_<objective>_` per searched objective): standard IRL
  (the study's base fit with failure_mode none, dual_path false, seed = its first seed) fitted
  on the training pairs relabelled Bradley–Terry by r* (β = BETA, default_rng(first seed));
* reference_oracle_test_starc/<option>:<value> for every value of a world option the study
  searches that changes r* (e.g. misspecification:0.5): the oracle of that world. A world
  whose info has the base world's `reward_id` (SIR: same judge and m, e.g. another β) has the
  same r* and is skipped (an oracle is a ridge fit of seconds).
Computed once per (world content hash, options, fit) and cached as JSON under
cache_dir()/reference/<sha256 of that key>.json; logged on the study's launch run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fairl.config import build
from fairl.irl.config import FitConfig
from fairl.metrics import evaluate_reward
from fairl.pairs import Pairs, World
from fairl.paths import cache_dir
from fairl.reference import bradley_terry_relabel, oracle_starc
from fairl.worlds import load_world

BETA = 0.25
VERSION = 1  # bump when what is computed changes: old cache entries are then ignored
STANDARD = {"failure_mode": "none", "dual_path": False}


def _objectives(spec) -> list[str]:
    """The objectives the study searches (empty when it does not search `objective`)."""
    param = spec.search.get("objective")
    return [str(choice) for choice in getattr(param, "choices", [])]


_ORACLES: dict[str, float] = {}


def _oracle(world: World) -> float:
    """oracle_starc of a loaded world, once per process and dataset hash (a ridge fit of
    seconds; studies of one demo share worlds, e.g. the SIR world at β = 0.5)."""
    if world.dataset_hash not in _ORACLES:
        _ORACLES[world.dataset_hash] = oracle_starc(world.train, world.test).starc
    return _ORACLES[world.dataset_hash]


def _bt_irl_starc(world: World, fit_values: dict[str, Any], seed: int) -> float:
    """Test STARC of standard IRL fitted on Bradley–Terry(r*) relabelled training pairs."""
    from fairl.irl.fit import fit  # heavy: torch

    train = world.train
    relabelled = bradley_terry_relabel(train, seed, BETA)
    pairs = Pairs(h_T=relabelled.h_T, h_NT=relabelled.h_NT, gt_T=relabelled.gt_T,
                  gt_NT=relabelled.gt_NT, prompt_ids=train.prompt_ids)
    config = build(FitConfig, {**fit_values, **STANDARD, "seed": seed}, "fit")
    result = fit(pairs.h_T, pairs.h_NT, config, pairs.gt_T, pairs.gt_NT)
    return evaluate_reward(result.reward, world.test)["starc"]


def compute(world: World, fit_values: dict[str, Any], objectives: list[str],
            seed: int) -> dict[str, float]:
    """The reference metrics of a loaded world (see the module docstring); {} without r*."""
    if world.train.gt_T is None or world.test.gt_T is None:
        return {}
    base = fit_values.get("objective", FitConfig().objective)
    fitted = {objective: _bt_irl_starc(world, {**fit_values, "objective": objective}, seed)
              for objective in dict.fromkeys([base, *objectives])}
    values = {"reference_oracle_test_starc": _oracle(world),
              "reference_bt_irl_test_starc": fitted[base]}
    values.update({f"reference_bt_irl_{objective}_test_starc": fitted[objective]
                   for objective in objectives})
    return values


def _searched_options(spec) -> dict[str, list]:
    """world.options.<name> -> the values the study searches (lists only)."""
    return {key.removeprefix("world.options."): list(param.choices)
            for key, param in spec.search.items()
            if key.startswith("world.options.") and hasattr(param, "choices")}


def option_oracles(world_spec: dict, searched: dict[str, list], base: World) -> dict[str, float]:
    """reference_oracle_test_starc/<option>:<value> of the world at each searched value whose
    r* is not the base world's."""
    values = {}
    for name, choices in searched.items():
        for choice in choices:
            world = load_world(world_spec["name"], {**world_spec["options"], name: choice})
            same = world.info.get("reward_id") is not None and \
                world.info.get("reward_id") == base.info.get("reward_id")
            if not same and world.train.gt_T is not None and world.test.gt_T is not None:
                values[f"reference_oracle_test_starc/{name}:{choice}"] = _oracle(world)
    return values


def reference_metrics(spec) -> dict[str, float]:
    """The cached reference metrics of a StudySpec's base world and fit."""
    world_spec = spec.world
    world = load_world(world_spec["name"], world_spec["options"])
    seed, objectives, searched = spec.seeds[0], _objectives(spec), _searched_options(spec)
    key = {"version": VERSION, "dataset_hash": world.dataset_hash, "world": world_spec["name"],
           "options": world_spec["options"], "fit": spec.fit, "objectives": objectives,
           "seed": seed, "beta": BETA}
    if searched:  # absent otherwise: the cache entries of earlier studies stay valid
        key["searched_options"] = searched
    key = json.dumps(key, sort_keys=True, default=str)
    path = cache_dir() / "reference" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    if path.is_file():
        return json.loads(path.read_text())["metrics"]
    values = {**compute(world, spec.fit, objectives, seed),
              **option_oracles(world_spec, searched, world)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{id(values)}.tmp")
    temporary.write_text(json.dumps({"key": json.loads(key), "metrics": values}, indent=1))
    temporary.replace(path)  # atomic: a concurrent launch reads a whole file or none
    return values
