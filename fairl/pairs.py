"""Pairs and World: the arrays every fit, metric and study works on (imports nothing of fairl)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pairs:
    """Preference pairs as arrays: row i is (aligned output o_T,i, base output o_NT,i)."""

    h_T: np.ndarray  # (n, d) float32 embeddings of the aligned (preferred) outputs
    h_NT: np.ndarray  # (n, d) float32 embeddings of the base outputs
    gt_T: np.ndarray | None = None  # (n,) ground-truth reward r* of o_T
    gt_NT: np.ndarray | None = None  # (n,) ground-truth reward r* of o_NT
    prompt_ids: np.ndarray | None = None  # (n,) prompt of each pair (STARC groups)
    tnt: np.ndarray | None = None  # (n,) bool: base toxic and aligned not (T→NT)
    text_T: list[str] | None = None  # aligned output texts, when the world has text
    text_NT: list[str] | None = None  # base output texts
    prompts: list[str] | None = None  # prompt texts

    def __post_init__(self):
        n = len(self.h_T)
        if self.h_T.shape != self.h_NT.shape or self.h_T.ndim != 2:
            raise ValueError(f"h_T {self.h_T.shape} and h_NT {self.h_NT.shape} must both be (n, d)")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and len(value) != n:
                raise ValueError(f"Pairs.{field.name} has {len(value)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.h_T)

    def freeze(self) -> Pairs:
        """These pairs with their arrays made read-only (in place): what a process shares
        across trials must not change under them; fairl.irl.fit reuses D = h_T - h_NT of
        read-only h_T and h_NT instead of building it per fit."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        return self

    def subset(self, index: np.ndarray) -> Pairs:
        """Rows `index` (integer array or boolean mask) of every field."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                values[field.name] = None
            elif isinstance(value, list):
                values[field.name] = [value[i] for i in index]
            else:
                values[field.name] = value[index]
        return Pairs(**values)


@dataclass(frozen=True)
class World:
    """Train, validation (for model selection; may be absent) and held-out test pairs of one
    named world, with its content hash."""

    name: str
    train: Pairs
    test: Pairs
    dataset_hash: str
    info: dict = dataclasses.field(default_factory=dict)
    validation: Pairs | None = None  # studies select on it; the test split only reports

    def freeze(self) -> World:
        """The world with every split's arrays read-only (Pairs.freeze)."""
        for pairs in (self.train, self.validation, self.test):
            if pairs is not None:
                pairs.freeze()
        return self
