"""Loading a model by hub id or local folder, failing fast (with what to download) when the
hub cannot be reached or the offline flags are set."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch


class ModelUnavailable(RuntimeError):
    """A model named by hub id is neither cached locally nor downloadable right now."""


def _offline() -> bool:
    flags = (
        os.environ.get(var, "").strip().lower()
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return any(flag in {"1", "true", "yes", "on"} for flag in flags)


def load_hub_or_dir(name: str, *, dtype: torch.dtype):
    if Path(name).expanduser().is_dir():
        return from_pretrained(str(Path(name).expanduser()), dtype=dtype, local_files_only=True)
    try:  # the local HF cache first: no network, no retries
        return from_pretrained(name, dtype=dtype, local_files_only=True)
    except OSError as error:  # transformers reports a missing cache entry as OSError
        if _offline():
            raise _unavailable(name, "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set") from error
    if not _hub_reachable():  # fail in seconds instead of ~50 s of download retries
        raise _unavailable(name, "the Hugging Face hub is unreachable")
    try:
        return from_pretrained(name, dtype=dtype, local_files_only=False)
    except OSError as error:
        raise _unavailable(name, f"download failed: {error}") from error


def _unavailable(name: str, reason: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"Model '{name}' is not in the local Hugging Face cache and could not be downloaded "
        f"({reason}). Download it once on a machine with internet access, e.g. "
        f"`huggingface-cli download {name}` (or `hf download {name}`), into the cache that "
        "HF_HOME points to (default ~/.cache/huggingface), then run with HF_HUB_OFFLINE=1 "
        "TRANSFORMERS_OFFLINE=1; or unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE on a machine "
        "with internet access; or pass a local model directory instead of a hub id."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens (assumed True behind a proxy)."""
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def from_pretrained(source: str, *, dtype: torch.dtype, local_files_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, local_files_only=local_files_only
    )
    return model, tokenizer
