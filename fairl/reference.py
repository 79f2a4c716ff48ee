"""Room to improve, for a world with a true reward r*: the linear oracle and ideal labels.

`oracle_starc` is the STARC of the best linear head (ridge regression of r* on h), the floor
any linear reward model can reach on the test pairs; `bradley_terry_relabel` redraws the
order of each training pair from r* itself, so IRL can be run on "ideal" preference labels.
Pairs are duck-typed like `fairl.pairs.Pairs` (h_T, h_NT, gt_T, gt_NT, prompt_ids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairl.metrics import starc

ALPHAS = np.logspace(-6, 4, 21)


def _outputs(pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """All 2n outputs of the pairs: embeddings, r*, prompt ids (T rows first, then NT)."""
    if pairs.gt_T is None or pairs.gt_NT is None:
        raise ValueError("the world has no true reward r* (gt_T / gt_NT)")
    h = np.concatenate([pairs.h_T, pairs.h_NT]).astype(np.float64)
    gt = np.concatenate([pairs.gt_T, pairs.gt_NT]).astype(np.float64)
    groups = None if pairs.prompt_ids is None else np.concatenate([pairs.prompt_ids] * 2)
    return h, gt, groups


@dataclass(frozen=True)
class OracleFit:
    """The ridge oracle: its test STARC, the chosen regularisation and the linear head."""

    starc: float
    alpha: float
    coef: np.ndarray  # (d,)
    intercept: float


def oracle_starc(train, test, alphas: np.ndarray = ALPHAS) -> OracleFit:
    """Ridge of r* on h over train outputs h_T ∪ h_NT, α by leave-one-out CV on train only
    (sklearn RidgeCV, efficient LOO of Rifkin & Lippert 2007); STARC on test by prompt groups."""
    h_train, gt_train, _ = _outputs(train)
    h_test, gt_test, groups = _outputs(test)
    if h_train.shape[1] != h_test.shape[1]:
        raise ValueError(f"train has d={h_train.shape[1]}, test has d={h_test.shape[1]}")
    from sklearn.linear_model import RidgeCV  # heavy (~1 s with scipy.stats): here, not at import

    model = RidgeCV(alphas=alphas).fit(h_train, gt_train)
    distance = starc(model.predict(h_test), gt_test, groups)
    return OracleFit(starc=distance, alpha=float(model.alpha_), coef=model.coef_.copy(),
                     intercept=float(model.intercept_))


@dataclass(frozen=True)
class Relabelled:
    """New pair arrays after Bradley–Terry relabelling; `swapped` marks the reversed pairs
    (apply it to any other per-pair field, e.g. texts)."""

    h_T: np.ndarray
    h_NT: np.ndarray
    gt_T: np.ndarray
    gt_NT: np.ndarray
    swapped: np.ndarray  # (n,) bool


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = ½(1 + tanh(x/2)), overflow-free."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def bradley_terry_relabel(pairs, rng: np.random.Generator | int,
                          beta: float = 0.25) -> Relabelled:
    """Keep aligned = a with probability σ((r*(a) − r*(b))/β), else swap (Bradley & Terry 1952).

    β → 0 orders every pair by r* (ties: a fair coin); large β makes the order a coin flip.
    """
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if pairs.gt_T is None or pairs.gt_NT is None:
        raise ValueError("the world has no true reward r* (gt_T / gt_NT)")
    rng = np.random.default_rng(rng)
    gap = np.asarray(pairs.gt_T, dtype=np.float64) - np.asarray(pairs.gt_NT, dtype=np.float64)
    if beta == 0:
        keep_prob = np.where(gap > 0, 1.0, np.where(gap < 0, 0.0, 0.5))
    else:
        keep_prob = _sigmoid(gap / beta)
    swapped = rng.random(len(gap)) >= keep_prob
    column = swapped[:, None]
    return Relabelled(h_T=np.where(column, pairs.h_NT, pairs.h_T),
                      h_NT=np.where(column, pairs.h_T, pairs.h_NT),
                      gt_T=np.where(swapped, pairs.gt_NT, pairs.gt_T),
                      gt_NT=np.where(swapped, pairs.gt_T, pairs.gt_NT),
                      swapped=swapped)
