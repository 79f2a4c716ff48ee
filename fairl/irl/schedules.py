"""Per-round schedules of FA-IRL (Algorithm 1): failure threshold γ_t, weight λ_t, rate p_t."""

from __future__ import annotations

import math


def progress(t: int, rounds: int) -> float:
    """Fraction of training done at round t: 0 at the first round, 1 at the last."""
    return t / (rounds - 1) if rounds > 1 else 0.0


def gamma_schedule(t: int, rounds: int, start: float, end: float, shape: str = "linear") -> float:
    """Failure threshold γ_t, annealed from `start` to `end` so the criterion tightens."""
    s = progress(t, rounds)
    if shape == "constant":
        return start
    if shape == "linear":
        return start + (end - start) * s
    if shape == "cosine":
        return start + (end - start) * (1 - math.cos(math.pi * s)) / 2
    raise ValueError(f"unknown gamma shape {shape!r}")


REFERENCE_ROUNDS = 100  # the paper's budget: a scaled λ decay keeps its curve over these


def lambda_schedule(t: int, lambda0: float, decay: float, fixed: bool = False,
                    rounds: int | None = None) -> float:
    """Failure-loss weight λ_t = λ_0 exp(-decay t), or λ_0 when fixed; given `rounds`, the
    decay is per REFERENCE_ROUNDS / rounds rounds (λ_t = λ_0 exp(-decay · 100 t / rounds))."""
    if fixed:
        return lambda0
    scale = REFERENCE_ROUNDS / rounds if rounds else 1.0
    return lambda0 * math.exp(-decay * scale * t)


def p_schedule(t: int, rounds: int, p0: float, p_end: float) -> float:
    """Failure sampling rate p_t, linear from p0 (paper: 20 %) to p_end (paper: 0 %)."""
    return p0 + (p_end - p0) * progress(t, rounds)
