"""WorldBuildConfig: every setting of `fairl world build`, checked before any work starts.

Light on purpose (pydantic and the hub's constants, no torch): the CLI validates a config,
and fails on uncached hub inputs offline, in about a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.dataclasses import dataclass

from fairl.config import STRICT, ConfigError, apply_overrides, build, load_yaml
from fairl.data import prompts as P
from fairl.devices import DeviceName, resolve_device
from fairl.paths import DEFAULT_WORLD_DIR

DEFAULT_MODEL = "smollm2-135m-instruct"  # fairl.lm.DEFAULT_MODEL (not imported: torch)
HUB_SCORER = "s-nlp/roberta_toxicity_classifier"  # fairl.data.scorers.HUB_SCORER (torch)


@dataclass(config=STRICT)
class WorldBuildConfig:
    """Everything that determines a built world (its hash names the stage cache)."""

    name: str = Field("default", description="world name, written into the dataset card")
    base_model: str = Field("smollm2-135m-instruct",
                            description="base LM: the embedded SmolLM2, a hub id or a local dir")
    aligned_model: str | None = Field(
        None, description="an already-aligned LM (hub id/dir); None = build it here by RLHF")
    prompts: str = Field("embedded", description="'embedded' or 'hub:<dataset id or local path>'")
    benign_per_source: int = Field(600, ge=0, description="benign prefixes per benign source")
    hub_min_toxicity: float = Field(0.3, ge=0, le=1, description="hub prompts: toxicity filter")
    max_prompts: int | None = Field(None, ge=1, description="cap on prompts (small test builds)")
    samples_per_toxic_prompt: int = Field(
        5, ge=1, description="k continuations per toxic (RTP) prompt and model")
    samples_per_benign_prompt: int = Field(
        2, ge=1, description="k continuations per benign prompt and model")
    max_new_tokens: int = Field(24, ge=1, description="longest continuation, in tokens")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of both models")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    gen_batch_size: int = Field(32, ge=1, description="sequences per generation batch")
    chunk_size: int = Field(256, ge=1, description="prompts per saved generation chunk")
    reward_scorer: str = Field("profanity", description="scorer that defines r* (and T→NT)")
    judges: list[str] = Field(default_factory=lambda: ["profanity", "bilstm"],
                              description="every scorer recorded per output")
    threshold: float = Field(0.5, gt=0, lt=1, description="toxicity >= threshold counts as toxic")
    rlhf: dict[str, Any] = Field(default_factory=dict,
                                 description="fairl.lm.rlhf.RLHFConfig overrides for the aligned LM")
    rlhf_prompts: str = Field("train", description="prompts RLHF trains on: train split or all")
    kl_samples: int | None = Field(None, ge=1, description="pairs used for the KL estimate; None=all")
    seed: int = Field(0, ge=0, description="seeds RLHF and generation")
    device: DeviceName = Field(
        "auto", description="auto | cpu | cuda | cuda:N for every model stage (RLHF, generation, "
        "log-probs, neural judges); auto = CUDA if available. Not in the stage-cache hash; the "
        "dtype it implies (bf16 on a GPU that has it) is")


def read_build_config(path: str | Path | None, overrides: dict | None = None,
                      sets: list[str] | tuple = ()) -> WorldBuildConfig:
    """A build config's fields, checked, with `overrides` and `--set key.sub=value`s applied."""
    values = load_yaml(path) if path else {}
    values.update(overrides or {})
    values = apply_overrides(values, list(sets))
    return build(WorldBuildConfig, values, str(path or "world build"))


def load_build_config(path: str | Path | None, overrides: dict | None = None,
                      sets: list[str] | tuple = ()) -> WorldBuildConfig:
    """Read and check a build config: fields, hub inputs, RLHF overrides, device, in that order.

    The hub check comes first and needs no torch: offline, a config naming uncached hub
    models or datasets fails in about a second, listing every download it needs.
    """
    config = read_build_config(path, overrides, sets)
    check_hub_inputs(config, str(path or "world build config"))
    from fairl.lm.rlhf import RLHFConfig  # heavy: torch, transformers

    try:
        RLHFConfig(**config.rlhf)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path or 'world build'}.rlhf: {error}") from None
    resolve_device(config.device, f"{path or 'world build config'}.device")
    return config


def default_out(name: str) -> Path:
    """Where `fairl world build` writes a world: the embedded one's folder, or worlds/<name>."""
    return DEFAULT_WORLD_DIR if name == "default" else Path("worlds") / name


def config_hash(config: WorldBuildConfig, dtype: str = "float32") -> str:
    """Name of the stage cache: every field but `device`, plus the model dtype unless fp32.

    So a CPU/fp32 build keeps the hash it had before `device` existed.
    """
    values = dataclasses.asdict(config)
    values.pop("device")
    if dtype != "float32":
        values["dtype"] = dtype
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def hub_inputs(config: WorldBuildConfig) -> list[tuple[str, str]]:
    """(kind, hub id) of every model and dataset the build reads from the hub (not local)."""
    wanted = [("model", config.base_model), ("model", config.aligned_model)]
    if config.prompts.startswith("hub:"):
        wanted.append(("dataset", config.prompts.removeprefix("hub:")))
    for scorer in dict.fromkeys([config.reward_scorer, *config.judges]):
        if scorer == "hub" or scorer.startswith("hub:"):
            wanted.append(("model", scorer.partition(":")[2] or HUB_SCORER))
    return [(kind, name) for kind, name in wanted
            if name and name != DEFAULT_MODEL and not Path(name).expanduser().exists()]


def check_hub_inputs(config: WorldBuildConfig, where: str) -> None:
    """ConfigError listing the hub inputs that are not cached when they cannot be downloaded."""
    wanted = hub_inputs(config)
    if not wanted or not (P.hub_offline() or not P.hub_reachable()):
        return
    missing = [(kind, name) for kind, name in wanted if not hub_cached(kind, name)]
    if not missing:
        return
    reason = "offline mode is on" if P.hub_offline() else "the Hugging Face hub is unreachable"
    listed = ", ".join(f"{kind} {name}" for kind, name in missing)
    commands = "; ".join(f"`hf download {'--repo-type dataset ' if kind == 'dataset' else ''}"
                         f"{name}`" for kind, name in missing)
    raise ConfigError(
        f"{where}: needs from the Hugging Face hub, not in the local cache, and {reason}: "
        f"{listed}. On a machine with internet access run {commands} (datasets: then load "
        "each once with datasets.load_dataset) into the cache HF_HOME points to (default "
        "~/.cache/huggingface), copy it here, and rerun; nothing was built.")


def hub_cached(kind: str, name: str) -> bool:
    """Whether a hub model or dataset has a snapshot in the local caches (no network)."""
    from huggingface_hub import constants

    folder = f"{kind}s--{name.replace('/', '--')}"
    if any((Path(constants.HF_HUB_CACHE) / folder / "snapshots").glob("*/*")):
        return True
    if kind == "dataset":  # datasets' own Arrow cache (what load_dataset fills)
        datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE",
                                             Path(constants.HF_HOME) / "datasets"))
        return any(datasets_cache.glob(f"{name.replace('/', '___')}*"))
    return False
