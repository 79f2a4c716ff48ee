"""`fairl world build --plan`: every stage of a build, its size, device, disk and time, no work.

Light on purpose (no torch, no model or dataset is opened): the plan of the paper's config
prints in about a second, and offline it ends with the hub check's one error naming what to
download. Sizes are upper bounds where the prompt count is only known after filtering.

Times are estimates, never measurements: the CPU rates below were measured on this project's
2 cores with SmolLM2-135M (README "Devices"), scaled by the base LM's parameter count (read
from its name, e.g. pythia-410m; 135M when the name does not say), and on a GPU divided by an
assumed speedup of 100-300x for batched bf16 work of this size. Calibration on the CPU: for
the default config the plan says 1.8-3.6 h in all; the shipped world's build took 108 min
(its card: RLHF 44 min, generation 46, log-probs 18).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from fairl.data import prompts as P
from fairl.data.build_config import (
    DEFAULT_MODEL,
    WorldBuildConfig,
    config_hash,
    default_out,
    hub_cached,
    hub_inputs,
)
from fairl.paths import cache_dir

# fairl.lm.rlhf.RLHFConfig's defaults for the fields a plan needs (tests/data/test_plan.py
# checks they agree; importing the trainer would import torch).
RLHF_DEFAULTS = {"steps": 70, "prompts_per_step": 16, "samples_per_prompt": 4,
                 "max_new_tokens": 24, "lora_r": 16}
RTP_ROWS = 99_442  # allenai/real-toxicity-prompts, before the toxicity filter
REFERENCE_PARAMS = 135e6  # SmolLM2-135M, the model the CPU rates were measured with
CPU_GENERATE_TOKENS_S = 144.0  # ~6 sequences/s of 24 tokens, 2 idle cores
CPU_RLHF_S_PER_SEQUENCE = 19 / 64  # 17-21 s per RLOO step of 64 sequences x 24 tokens
FORWARD_SPEEDUP = 10.0  # a scoring pass over a whole sequence vs sampling it token by token
GPU_SPEEDUP = (100.0, 300.0)  # assumed, not measured: no GPU was available here


@dataclasses.dataclass
class Stage:
    name: str
    work: str
    cpu_seconds: float  # at the measured CPU rates, scaled to the model
    disk_bytes: float = 0.0


def parameters(model: str) -> float | None:
    """Parameter count from a model's name (`pythia-410m` -> 4.1e8), None if it has none."""
    if model == DEFAULT_MODEL:
        return REFERENCE_PARAMS
    found = re.search(r"(\d+(?:\.\d+)?)([mb])(?![a-z])", Path(model).name.lower())
    return float(found[1]) * (1e6 if found[2] == "m" else 1e9) if found else None


def prompt_counts(config: WorldBuildConfig) -> tuple[int, int, str]:
    """(toxic, benign) prompt counts (upper bounds for a filtered hub set) and how known."""
    if config.prompts == "embedded":
        prompts = P.load_prompts(benign_per_source=config.benign_per_source)
        toxic = sum(p.is_toxic_prompt for p in prompts)
        counts, how = (toxic, len(prompts) - toxic), "the wheels' prompts"
    else:
        source = config.prompts.removeprefix("hub:")
        rows = RTP_ROWS if source == P.HUB_RTP else None
        path = Path(source)
        if path.is_file() and path.stat().st_size < 200e6:
            rows = sum(1 for line in path.open(encoding="utf-8") if line.strip())
        cap = config.max_prompts or rows
        counts = (min(cap, rows) if rows and cap else cap or 0, 0)
        how = (f"at most {counts[0]:,}: rows with toxicity > {config.hub_min_toxicity}"
               + (f" of {rows:,}" if rows else "") + (", capped at max_prompts" if
                                                       config.max_prompts else ""))
    if config.max_prompts is not None and config.prompts == "embedded":
        keep = min(config.max_prompts, sum(counts))
        counts = (min(counts[0], keep), max(0, keep - counts[0]))
    return counts[0], counts[1], how


def plan_stages(config: WorldBuildConfig, toxic: int, benign: int) -> list[Stage]:
    """The build's stages with their work, CPU time at the measured rates, and disk."""
    scale = (parameters(config.base_model) or REFERENCE_PARAMS) / REFERENCE_PARAMS
    rlhf = {**RLHF_DEFAULTS, **config.rlhf}
    pairs = toxic * config.samples_per_toxic_prompt + benign * config.samples_per_benign_prompt
    sequences = 2 * pairs
    gen_seconds = sequences * config.max_new_tokens / CPU_GENERATE_TOKENS_S * scale
    stages = [Stage("prompts", f"{toxic + benign:,} prompts ({toxic:,} toxic)", 5.0)]
    if config.aligned_model is None:
        rlhf_sequences = rlhf["steps"] * rlhf["prompts_per_step"] * rlhf["samples_per_prompt"]
        stages.append(Stage(
            "RLHF (RLOO + LoRA)", f"{rlhf['steps']} steps x {rlhf['prompts_per_step']} x "
            f"{rlhf['samples_per_prompt']} = {rlhf_sequences:,} seq. x "
            f"{rlhf['max_new_tokens']} tokens", rlhf_sequences * CPU_RLHF_S_PER_SEQUENCE * scale
            * rlhf["max_new_tokens"] / 24, 50e6 * scale))
    else:
        stages.append(Stage("aligned model", f"given: {config.aligned_model}", 0.0))
    stages.append(Stage("generation (base + aligned)", f"{sequences:,} sequences x "
                        f"{config.max_new_tokens} tokens", gen_seconds, sequences * 300))
    kl_rows = min(config.kl_samples or pairs, pairs)
    stages.append(Stage("log-probs (KL estimate)", f"2 x {kl_rows:,} sequences",
                        2 * kl_rows * config.max_new_tokens / CPU_GENERATE_TOKENS_S * scale
                        / FORWARD_SPEEDUP, 16 * kl_rows))
    neural = [judge for judge in dict.fromkeys([config.reward_scorer, *config.judges])
              if judge != "profanity"]
    judges = len(dict.fromkeys([config.reward_scorer, *config.judges]))
    stages.append(Stage("judges (r* and the others)", f"{judges} x {sequences:,} texts",
                        len(neural) * sequences * config.max_new_tokens
                        / CPU_GENERATE_TOKENS_S / FORWARD_SPEEDUP, pairs * 400))
    stages.append(Stage("encode h(o) (studies: base-meanpool)", f"{sequences:,} texts",
                        sequences * config.max_new_tokens / CPU_GENERATE_TOKENS_S * scale
                        / FORWARD_SPEEDUP, sequences * 4 * 1024 * scale ** 0.5))
    return stages


def device_line(device: str) -> tuple[str, bool]:
    """(what the build would run on, whether that is a GPU), without importing torch."""
    gpus = Path("/proc/driver/nvidia/gpus")
    seen = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    here = f"{seen} NVIDIA GPU(s) visible here" if seen else "no NVIDIA GPU visible here"
    if device == "cpu":
        return f"cpu ({here})", False
    if device == "auto":
        return f"auto -> {'cuda' if seen else 'cpu'} ({here})", bool(seen)
    if not seen:
        return f"{device} ({here}: the build stops at its device check)", True
    return f"{device} ({here})", True


def hub_lines(config: WorldBuildConfig) -> tuple[list[str], float]:
    """One line per hub input (present / missing, size) and the bytes still to download."""
    lines, missing_bytes = [], 0.0
    for kind, name in hub_inputs(config):
        if hub_cached(kind, name):
            lines.append(f"  present  {kind} {name}")
            continue
        params = parameters(name) if kind == "model" else None
        size = (f", about {params * 2 / 1e9:.1f}-{params * 4 / 1e9:.1f} GB (fp16-fp32 weights)"
                if params else ", size unknown until downloaded")
        missing_bytes += params * 4 if params else 0.0
        flag = "--repo-type dataset " if kind == "dataset" else ""
        lines.append(f"  MISSING  {kind} {name}{size}: hf download {flag}{name}")
    local = [name for name in (config.base_model, config.aligned_model, config.prompts,
                               config.reward_scorer, *config.judges)
             if name and Path(str(name).removeprefix("hub:")).expanduser().exists()]
    lines += [f"  local    {name}" for name in dict.fromkeys(local)]
    return lines or ["  none (every input ships with the pip packages)"], missing_bytes


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def world_plan(config: WorldBuildConfig, where: str, out: str | None = None) -> str:
    """The plan as text (check_hub_inputs then says, offline, what is missing)."""
    toxic, benign, how = prompt_counts(config)
    stages = plan_stages(config, toxic, benign)
    device, gpu = device_line(config.device)
    hubs, download = hub_lines(config)
    stage_dir = cache_dir() / "worlds" / f"{config.name}-{config_hash(config)}"
    params = parameters(config.base_model)
    size = f"{params / 1e6:,.0f}M parameters by its name" if params else "size not in its name"
    lines = [(f"world build plan: {where} (world {config.name!r}, out "
              f"{out or default_out(config.name)})"),
             (f"  base LM {config.base_model} ({size}); "
              f"r* {config.reward_scorer}; judges {', '.join(config.judges)}"),
             f"  device: {device}", f"  prompts: {how}",
             f"  stage cache: {stage_dir}"
             + (" (its fp32 name; bf16 on a GPU names another)" if gpu else "")
             + (": exists, its finished stages are reused" if stage_dir.exists() else ""), "",
             f"  {'stage':<38} {'work':<46} {'time (estimate)':>19}"]
    spread = (1 / GPU_SPEEDUP[1], 1 / GPU_SPEEDUP[0]) if gpu else (1.0, 2.0)
    for stage in [*stages, Stage("total", "", sum(stage.cpu_seconds for stage in stages))]:
        low, high = (stage.cpu_seconds * factor for factor in spread)
        lines.append(f"  {stage.name:<38} {stage.work:<46} "
                     f"{_minutes(low) + ' - ' + _minutes(high):>19}")
    disk = sum(stage.disk_bytes for stage in stages) + download
    rates = ("the measured 2-core CPU rates / an assumed GPU speedup of 100-300x" if gpu
             else "the measured 2-core CPU rates, x1-2")
    lines += ["", f"  times: {rates}; estimates, no GPU was available to measure them",
              f"  disk: about {disk / 1e9:.1f} GB (stage cache, PairSet, embeddings"
              + (", hub downloads of known size" if download else "") + ")", "",
              "hub inputs:", *hubs]
    return "\n".join(lines)
