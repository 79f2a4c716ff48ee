"""Where fairl keeps its caches, tracking store and shipped data."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


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
