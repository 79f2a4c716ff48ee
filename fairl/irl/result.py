"""What a fit returns (FitResult: the one heads format), its inputs (the difference matrix D)
and its errors; shared by fairl.irl.fit and the batched engine fairl.irl.batch."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fairl.irl.config import FitConfig


class FitDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which round and which term."""


def init_heads(d: int, n_heads: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaiming-uniform weights (heads, d) and biases (heads,), U(±1/√d) as nn.Linear does."""
    bound = 1 / math.sqrt(d)
    weights = (torch.rand(n_heads, d, generator=generator) * 2 - 1) * bound
    biases = (torch.rand(n_heads, generator=generator) * 2 - 1) * bound
    return weights, biases


@dataclasses.dataclass
class FitResult:
    """Fitted reward heads, the config, per-round history, and failure counts per pair."""

    theta_D: np.ndarray  # (d,)
    b_D: float
    theta_F: np.ndarray | None  # (d,) or None without the failure path
    b_F: float
    config: FitConfig
    history: list[dict]  # one record per round
    failure_counts: np.ndarray  # (n,) rounds each training pair spent in F_t

    def reward_D(self, h: np.ndarray) -> np.ndarray:
        """Base path R_D(o) for embeddings h (m, d)."""
        return np.asarray(h, dtype=np.float32) @ self.theta_D + np.float32(self.b_D)

    def reward_F(self, h: np.ndarray) -> np.ndarray:
        """Failure path R_F(o); zeros when the fit had no failure head."""
        h = np.asarray(h, dtype=np.float32)
        if self.theta_F is None:
            return np.zeros(len(h), dtype=np.float32)
        return h @ self.theta_F + np.float32(self.b_F)

    def reward(self, h: np.ndarray) -> np.ndarray:
        """R(o) = R_D(o) + R_F(o), as one product h (θ_D + θ_F) + b_D + b_F."""
        if self.theta_F is None:
            return self.reward_D(h)
        theta = np.asarray(self.theta_D, np.float32) + np.asarray(self.theta_F, np.float32)
        return np.asarray(h, dtype=np.float32) @ theta + np.float32(self.b_D + self.b_F)

    def heads(self) -> dict[str, np.ndarray]:
        """The heads as arrays: the one layout of every heads file (save, rewards.npz)."""
        return {"theta_D": np.asarray(self.theta_D, np.float32),
                "theta_F": np.asarray(self.theta_F if self.theta_F is not None else [],
                                      np.float32),
                "biases": np.array([self.b_D, self.b_F], dtype=np.float32)}

    @classmethod
    def from_heads(cls, arrays, config: FitConfig, prefix: str = "",
                   history: list[dict] | None = None,
                   failure_counts: np.ndarray | None = None) -> FitResult:
        """Read heads written by `heads()` (keys under `prefix`, e.g. "seed0/" in rewards.npz)."""
        theta_F = np.asarray(arrays[f"{prefix}theta_F"])
        biases = np.asarray(arrays[f"{prefix}biases"])
        return cls(theta_D=np.asarray(arrays[f"{prefix}theta_D"]), b_D=float(biases[0]),
                   theta_F=theta_F if theta_F.size else None, b_F=float(biases[1]),
                   config=config, history=history or [],
                   failure_counts=np.zeros(0) if failure_counts is None else failure_counts)

    def save(self, path: str | Path) -> Path:
        """Write heads, config, history and failure counts to one .npz file."""
        path = Path(path)
        np.savez(path, **self.heads(), failure_counts=self.failure_counts,
                 config=json.dumps(dataclasses.asdict(self.config)),
                 history=json.dumps(self.history))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FitResult:
        with np.load(path) as data:
            return cls.from_heads(data, FitConfig(**json.loads(str(data["config"]))),
                                  history=json.loads(str(data["history"])),
                                  failure_counts=data["failure_counts"])


def difference_matrix(h_T, h_NT) -> torch.Tensor:
    """D = h_T - h_NT (n, d) float32, checked: shapes, at least one pair, finite.

    Read-only inputs (a loaded world's: fairl.pairs.Pairs.freeze) get their D built once and
    reused by every later fit of the process (the last few pairs kept, by identity), as a
    sweep's trials and seeds fit the same pairs: at 20 000 x 768, building and checking D is
    ~16 ms, 5 % of a 100-round fit. Writeable inputs get a new D every call.
    """
    key = (id(h_T), id(h_NT))
    hit = _DIFFS.get(key)
    if hit is not None and hit[0] is h_T and hit[1] is h_NT:
        return hit[2]
    h_T32 = np.asarray(h_T, dtype=np.float32)
    h_NT32 = np.asarray(h_NT, dtype=np.float32)
    if h_T32.ndim != 2 or h_T32.shape != h_NT32.shape:
        raise ValueError(f"h_T {h_T32.shape} and h_NT {h_NT32.shape} must both be (n, d)")
    if len(h_T32) == 0:
        raise ValueError("no pairs to fit")
    diffs = torch.from_numpy(h_T32 - h_NT32)
    # A NaN or inf in h_T or h_NT makes D, and so its sum, non-finite; a finite sum clears
    # both inputs in one read of D (3 ms at 20 000 x 768, vs 18 ms for isfinite on both).
    if not diffs.sum().isfinite() and not (np.isfinite(h_T32).all()
                                           and np.isfinite(h_NT32).all()):
        raise ValueError("embeddings contain NaN or inf")
    if all(isinstance(h, np.ndarray) and h.dtype == np.float32 and not h.flags.writeable
           for h in (h_T, h_NT)):
        if len(_DIFFS) >= _DIFFS_KEPT:
            del _DIFFS[next(iter(_DIFFS))]  # the oldest
        _DIFFS[key] = (h_T, h_NT, diffs, {})  # holding h_T and h_NT keeps their ids theirs
    return diffs


def column_sums(diffs: torch.Tensor) -> np.ndarray:
    """Σ_i D_i (d,) float32, summed in float64 (float32 row by row drifts): a full batch's
    margin sum is θ · Σ_i D_i, d products instead of n. Kept with a reused D (3 ms at
    9 243 x 384 in numpy; torch's float64 sum took 8-15 ms, a quarter of a 100-round fit)."""
    cached = _derived(diffs)
    if cached is not None and "sums" in cached:
        return cached["sums"]
    sums = np.add.reduce(diffs.numpy(), axis=0, dtype=np.float64).astype(np.float32)
    if cached is not None:
        cached["sums"] = sums
    return sums


def transposed(diffs: torch.Tensor) -> np.ndarray:
    """Dᵀ (d, n) as a C-contiguous float32 array, kept with a reused D like column_sums (the
    CPU fit's products run on it: fairl.irl.ops.NumpyOps.columns)."""
    cached = _derived(diffs)
    if cached is not None and "transposed" in cached:
        return cached["transposed"]
    columns = np.ascontiguousarray(diffs.numpy().T)
    if cached is not None:
        cached["transposed"] = columns
    return columns


def _derived(diffs: torch.Tensor) -> dict | None:
    """What is kept with a reused D (one of _DIFFS), or None for a D built for one fit."""
    for entry in _DIFFS.values():
        if entry[2] is diffs:
            return entry[3]
    return None


# (h_T, h_NT, D, what is derived from D) by (id(h_T), id(h_NT))
_DIFFS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, torch.Tensor, dict]] = {}
_DIFFS_KEPT = 4  # a world's train split, and a few composed or imported ones


class Monitor(Protocol):
    """What fit() calls every `every` rounds with (round, the heads so far as a FitResult)."""

    every: int

    def __call__(self, t: int, result: FitResult) -> None: ...
