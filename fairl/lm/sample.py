"""Sampling continuations with one seeded RNG per row (a continuation never depends on its
batch), batched generation, and generation to resumable chunk files."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fairl import devices
from fairl.lm.load import model_device


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """Seed of one sampled continuation: a pure function of (seed, prompt, sample number)."""
    digest = hashlib.blake2b(f"{seed}:{prompt_index}:{sample_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


class _GumbelSampler:
    """Logits processor that turns greedy decoding into exact sampling, one RNG per row.

    argmax(scores + Gumbel noise) is a draw from softmax(scores) (the Gumbel-max trick).
    One generator per row, seeded by `row_seed`, makes a continuation independent of the
    other rows in its batch (up to float round-off from padding); no global RNG is used.
    """

    def __init__(self, seeds: list[int]):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_(min=1e-20)))
        # Noise is drawn on the CPU on every device: the same seeds give the same draws.
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt; an empty prompt becomes [bos or eos] so it can be continued."""
    fallback = (
        tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    )
    return [ids or [fallback] for ids in tokenizer(list(prompts))["input_ids"]]


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
    return ids, mask


def sample_continuations(
    model,
    prompt_ids: list[list[int]],
    seeds: list[int],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    pad_id: int,
    eos_id: int,
) -> list[list[int]]:
    """One sampled continuation per row (token ids up to and including the first eos)."""
    from transformers import (
        GenerationConfig,
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    ids, mask = _left_pad(prompt_ids, pad_id)
    processors = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    processors.append(_GumbelSampler(seeds))
    # A fresh config so no model default (top_k, repetition penalty...) sneaks in.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id, eos_token_id=eos_id
    )
    device = model_device(model)
    with torch.inference_mode():
        output = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList(processors),
        )
    continuations = []
    for row in output[:, ids.shape[1] :].cpu().tolist():
        end = row.index(eos_id) + 1 if eos_id in row else len(row)
        continuations.append(row[:end])
    return continuations


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    k: int = 1,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    index_offset: int = 0,
) -> list[list[str]]:
    """k sampled continuations per prompt (completion style, no chat template).

    Continuation j of prompt i depends only on (seed, index_offset + i, j), the prompt and
    the sampling settings, not on the batch it shares. Texts exclude the prompt and
    special tokens. batch_size None: 32 on the CPU, 256 on a GPU (fairl.devices).
    """
    # Over 60 lines: argument checks plus one batched sampling loop whose per-row seeding
    # (the determinism guarantee above) must stay in one place.
    batch_size = devices.batch_size("generate", str(model_device(model)), batch_size)
    if min(k, max_new_tokens, batch_size) < 1:
        raise ValueError(
            f"k={k}, max_new_tokens={max_new_tokens}, batch_size={batch_size}: each must be >= 1"
        )
    if temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(
            f"temperature must be > 0 (got {temperature}) and top_p in (0, 1] (got {top_p})"
        )
    encoded = encode_prompts(tokenizer, prompts)
    # Jobs (prompt i, sample j) sorted by prompt length: batches carry little padding.
    jobs = sorted(
        ((i, j) for i in range(len(prompts)) for j in range(k)), key=lambda ij: len(encoded[ij[0]])
    )
    results: list[list[str]] = [[""] * k for _ in prompts]
    bar = tqdm(
        total=len(jobs),
        unit="seq",
        desc="generate",
        disable=not progress,
        dynamic_ncols=True,
        leave=False,
    )
    new_tokens = 0
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        continuations = sample_continuations(
            model,
            [encoded[i] for i, _ in batch],
            [row_seed(seed, index_offset + i, j) for i, j in batch],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            pad_id=tokenizer.pad_token_id,
            eos_id=tokenizer.eos_token_id,
        )
        for (i, j), text in zip(
            batch, tokenizer.batch_decode(continuations, skip_special_tokens=True)
        ):
            results[i][j] = text
        new_tokens += sum(map(len, continuations))
        bar.update(len(batch))
        bar.set_postfix(
            tok_s=f"{new_tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}", refresh=False
        )
    bar.close()
    return results


def generate_to_file(
    model,
    tokenizer,
    prompts: list[str],
    out_dir: str | Path,
    *,
    chunk_size: int = 256,
    progress: bool = True,
    **gen_kwargs,
) -> list[list[str]]:
    """`generate` in chunks of prompts, each saved as `chunk-NNNNN.jsonl` once finished.

    Chunks already on disk are read, not regenerated, so a killed job restarts from its
    last finished chunk with an identical result (seeds depend on the global prompt
    index only). `meta.json` records prompts and settings; a different job in the same
    folder raises ValueError. The folder does not record which model generated it:
    key `out_dir` by model.
    """
    # Over 60 lines: the meta check, the resume scan and the chunk loop are one resumable
    # job on out_dir; split, a reader could miss which state the loop may find on disk.
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    gen_kwargs.pop("index_offset", None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        key: value for key, value in gen_kwargs.items() if key not in ("batch_size", "progress")
    }
    meta = {
        "n_prompts": len(prompts),
        "prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
        "chunk_size": chunk_size,
        "settings": dict(sorted(settings.items())),
    }
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        found = json.loads(meta_path.read_text())
        if found != meta:
            raise ValueError(f"{out_dir} holds a different generation job: {found} != {meta}")
    else:
        _atomic_write(meta_path, json.dumps(meta, indent=1))
    n_chunks = math.ceil(len(prompts) / chunk_size)
    results: list[list[str]] = []
    for chunk in tqdm(range(n_chunks), desc="chunks", unit="chunk", disable=not progress):
        path = out_dir / f"chunk-{chunk:05d}.jsonl"
        start = chunk * chunk_size
        chunk_prompts = prompts[start : start + chunk_size]
        if not path.exists():
            completions = generate(
                model, tokenizer, chunk_prompts, index_offset=start, progress=progress, **gen_kwargs
            )
            lines = (
                json.dumps({"index": start + i, "prompt": p, "completions": c})
                for i, (p, c) in enumerate(zip(chunk_prompts, completions))
            )
            _atomic_write(path, "".join(line + "\n" for line in lines))
        records = [json.loads(line) for line in path.read_text().splitlines()]
        if [r["prompt"] for r in records] != chunk_prompts:
            raise ValueError(
                f"{path} does not hold prompts {start}..{start + len(chunk_prompts) - 1}"
            )
        results.extend(r["completions"] for r in records)
    return results


def _atomic_write(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    os.replace(staging, path)
