"""The LM stack: load a causal LM (hub, local folder or the shipped SmolLM2), sample and score
its continuations, train it by RLOO + LoRA against a reward, and encode texts with a frozen
encoder h(o).

Modules, bottom to top (the layers contract in pyproject.toml): `hub` (loading by hub id or
folder, failing fast offline) → `load` (`load_lm`, the SmolLM2 cache, threads) → `sample`
(seeded generation, resumable chunk files) → `logprobs` → `rlhf` (RLOO) | `encode` (frozen
encoders and the embedding cache). This package re-exports the first four's public names,
so `from fairl import lm; lm.load_lm(...)` reads as before.
"""

from fairl.lm.hub import ModelUnavailable, from_pretrained, load_hub_or_dir
from fairl.lm.load import (
    DEFAULT_MODEL,
    MANIFEST,
    WEIGHTS,
    configure_threads,
    load_lm,
    model_device,
    smollm2_cache,
    smollm2_gguf_path,
)
from fairl.lm.logprobs import completion_logprobs, perplexity, sequence_logprobs
from fairl.lm.sample import (
    encode_prompts,
    generate,
    generate_to_file,
    row_seed,
    sample_continuations,
)

__all__ = [
    "DEFAULT_MODEL", "MANIFEST", "WEIGHTS", "ModelUnavailable", "completion_logprobs",
    "configure_threads", "encode_prompts", "from_pretrained", "generate", "generate_to_file",
    "load_hub_or_dir", "load_lm", "model_device", "perplexity", "row_seed",
    "sample_continuations", "sequence_logprobs", "smollm2_cache", "smollm2_gguf_path",
]
