"""Where fairl keeps its caches, tracking store and shipped data."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The embedded default world (a PairSet folder shipped as package data).
DEFAULT_WORLD_DIR = PACKAGE_DIR / "data" / "default_world"


def project_root() -> Path:
    """The source checkout (where pyproject.toml is); falls back to the working directory."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def cache_dir() -> Path:
    """Content-addressed stage caches (models, generations, embeddings): $FAIRL_CACHE or .cache/."""
    path = Path(os.environ.get("FAIRL_CACHE", project_root() / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def mlruns_dir() -> Path:
    """The default local tracking store (MLflow SQLite db, artifacts, Optuna journals)."""
    path = Path(os.environ.get("FAIRL_MLRUNS", project_root() / "mlruns"))
    path.mkdir(parents=True, exist_ok=True)
    return path


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) within the process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        with open(path, "rb") as handle:
            _FILE_HASHES[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return _FILE_HASHES[key]


def redact(url: str) -> str:
    """A store URL (tracking URI, Optuna storage) without its password, for tags and messages."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


class StoreError(RuntimeError):
    """A tracking store or study journal is damaged, emptied or inconsistent: one or two lines
    naming the file, what is wrong and what to do (the CLI prints it without a traceback)."""
