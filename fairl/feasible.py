"""Theorem 1, measured: the feasible set of linear rewards, with and without failure constraints.

For pair differences D (n, d), rows h_T,i − h_NT,i, a linear reward θ has margins Δ = Dθ.
    F    = {θ : ‖θ‖∞ <= 1, Δ_i(θ) >= M for every pair i}
    F_FA = F ∩ {θ : Δ_i(θ) >= M_fail for every failure pair i}       (M_fail > M)
FA-IRL's Theorem 1: F_FA ⊊ F. `width` is the extent of a set along a unit direction u,
max u·θ − min u·θ over the set, each end one linear program (scipy.optimize.linprog, HiGHS);
NaN when the set is empty. `chebyshev_centre` gives one canonical interior reward of F (the
centre of its largest inscribed ball), whose lowest-margin pairs serve as failure pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog


def _constraints(diffs: np.ndarray, margin: float, failure_mask: np.ndarray | None,
                 margin_fail: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A_ub θ <= b_ub for Dθ >= M (and D_F θ >= M_fail): rows −D, bounds −M."""
    diffs = np.asarray(diffs, dtype=np.float64)
    bounds = np.full(len(diffs), float(margin))
    if failure_mask is not None and margin_fail is not None:
        bounds = np.where(np.asarray(failure_mask, bool), max(margin, margin_fail), bounds)
    return -diffs, -bounds


def _extreme(direction: np.ndarray, A: np.ndarray, b: np.ndarray) -> float | None:
    """min direction·θ over {Aθ <= b, ‖θ‖∞ <= 1}; None when infeasible."""
    result = linprog(direction, A_ub=A, b_ub=b, bounds=[(-1.0, 1.0)] * len(direction),
                     method="highs")
    return float(result.fun) if result.status == 0 else None


def width(diffs: np.ndarray, direction: np.ndarray, margin: float,
          failure_mask: np.ndarray | None = None, margin_fail: float | None = None) -> float:
    """Width of F (or F_FA with `failure_mask`, `margin_fail`) along unit `direction`."""
    direction = np.asarray(direction, dtype=np.float64)
    direction = direction / np.linalg.norm(direction)
    A, b = _constraints(diffs, margin, failure_mask, margin_fail)
    low = _extreme(direction, A, b)
    if low is None:
        return float("nan")
    high = -_extreme(-direction, A, b)
    return high - low


def random_directions(d: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, d) directions uniform on the unit sphere (normalised Gaussians)."""
    directions = rng.standard_normal((count, d))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def widths(diffs: np.ndarray, directions: np.ndarray, margin: float,
           failure_mask: np.ndarray | None = None, margin_fail: float | None = None
           ) -> np.ndarray:
    """`width` along each row of `directions`."""
    return np.array([width(diffs, u, margin, failure_mask, margin_fail) for u in directions])


@dataclass(frozen=True)
class Centre:
    """The Chebyshev centre θ_c of F and the radius of the largest ball in it."""

    theta: np.ndarray
    radius: float


def chebyshev_centre(diffs: np.ndarray, margin: float) -> Centre:
    """max r s.t. a_i·θ + r‖a_i‖ <= b_i for the rows of F (pairs and the box), one LP."""
    A, b = _constraints(diffs, margin, None, None)
    d = A.shape[1]
    box = np.vstack([np.eye(d), -np.eye(d)])
    A_all = np.vstack([A, box])
    b_all = np.concatenate([b, np.ones(2 * d)])
    norms = np.linalg.norm(A_all, axis=1)
    objective = np.zeros(d + 1)
    objective[-1] = -1.0  # maximise r
    result = linprog(objective, A_ub=np.column_stack([A_all, norms]), b_ub=b_all,
                     bounds=[(None, None)] * d + [(0, None)], method="highs")
    if result.status != 0:
        raise ValueError(f"F is empty at margin {margin} (linprog: {result.message})")
    return Centre(theta=result.x[:d], radius=float(result.x[-1]))


def max_margin(diffs: np.ndarray) -> float:
    """max_θ min_i Δ_i(θ) over ‖θ‖∞ <= 1: the largest M for which F is not empty."""
    diffs = np.asarray(diffs, dtype=np.float64)
    n, d = diffs.shape
    objective = np.zeros(d + 1)
    objective[-1] = -1.0  # maximise t subject to Dθ >= t
    result = linprog(objective, A_ub=np.column_stack([-diffs, np.ones(n)]), b_ub=np.zeros(n),
                     bounds=[(-1.0, 1.0)] * d + [(None, None)], method="highs")
    return float(result.x[-1])
