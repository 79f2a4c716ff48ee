"""How well a recovered reward matches: classification of outputs, pair order, STARC to r*."""

from __future__ import annotations

import numpy as np


def classification_metrics(r_T: np.ndarray, r_NT: np.ndarray) -> dict[str, float]:
    """Label outputs by source (aligned = 1, base = 0) and score them by the reward.

    Threshold = midpoint of the two classes' mean scores (DESIGN.md: "midpoint of the
    scores"); accuracy and F1 at it, ROC-AUC without one, and pairwise accuracy = the
    fraction of pairs whose aligned output scores strictly higher.

    Counted here rather than by sklearn.metrics (whose input checks cost ~15 ms a call, a
    fifth of a default-world trial's fits); tests/test_metrics.py checks they agree.
    ROC-AUC is the Mann-Whitney statistic, U / n²: per aligned score, the base scores below it
    and half those equal to it, counted by binary search in both sorted score lists (9 243
    pairs: 1.0 ms against 4.5 ms for scipy's mid-ranks; U is a sum of halves, exact in float64
    either way, so the two give the same number). Any NaN score makes it NaN.
    """
    r_T = np.asarray(r_T, dtype=np.float64)
    r_NT = np.asarray(r_NT, dtype=np.float64)
    if r_T.shape != r_NT.shape or r_T.ndim != 1 or len(r_T) == 0:
        raise ValueError(f"r_T {r_T.shape} and r_NT {r_NT.shape} must be equal, non-empty (n,)")
    n = len(r_T)
    threshold = (r_T.mean() + r_NT.mean()) / 2
    true_pos = int(np.count_nonzero(r_T > threshold))  # aligned outputs labelled aligned
    false_pos = int(np.count_nonzero(r_NT > threshold))
    aligned, base = np.sort(r_T), np.sort(r_NT)
    below_or_tied = np.searchsorted(base, aligned, "left").sum() \
        + np.searchsorted(base, aligned, "right").sum()  # 2U
    nan = np.isnan(aligned[-1]) or np.isnan(base[-1])  # np.sort puts NaN last
    auc = float("nan") if nan else below_or_tied / 2 / (n * n)
    return {
        "accuracy": (true_pos + n - false_pos) / (2 * n),
        "f1": 2 * true_pos / (2 * true_pos + false_pos + (n - true_pos)) if true_pos else 0.0,
        "roc_auc": float(auc),
        "pairwise_accuracy": float(np.mean(r_T > r_NT)),
    }


def _canonicalise(rewards: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Subtract the mean (per group when given: potential shaping per prompt), L2-normalise."""
    if groups is None:
        centred = rewards - rewards.mean()
    else:
        _, codes = np.unique(groups, return_inverse=True)
        sums = np.bincount(codes, weights=rewards)
        counts = np.bincount(codes)
        centred = rewards - (sums / counts)[codes]
    norm = np.linalg.norm(centred)
    # A constant reward has no direction: STARC canonicalises it to zero (distance 0.5).
    return centred / norm if norm > 1e-12 * max(1.0, np.abs(rewards).max()) else centred * 0


def starc(r_pred: np.ndarray, r_true: np.ndarray, groups: np.ndarray | None = None) -> float:
    """STARC distance in [0, 1]: half the L2 distance of the canonicalised, normalised rewards.

    0 = same reward up to a positive scale and (per-group) shift; 1 = the negation.
    Without groups it equals sqrt((1 - ρ) / 2), ρ the Pearson correlation.
    """
    r_pred = np.asarray(r_pred, dtype=np.float64)
    r_true = np.asarray(r_true, dtype=np.float64)
    if r_pred.shape != r_true.shape or r_pred.ndim != 1:
        raise ValueError(f"r_pred {r_pred.shape} and r_true {r_true.shape} must be equal (m,)")
    if groups is not None and len(groups) != len(r_pred):
        raise ValueError(f"groups has {len(groups)} entries, rewards have {len(r_pred)}")
    distance = 0.5 * np.linalg.norm(_canonicalise(r_pred, groups) - _canonicalise(r_true, groups))
    return float(min(max(distance, 0.0), 1.0))


def evaluate_reward(reward, pairs) -> dict[str, float]:
    """All metrics of reward function `reward(h) -> (m,)` on `fairl.pairs.Pairs`.

    STARC compares R with r* over every output of the pairs, grouped by prompt when the
    pairs know their prompts (rewards equal up to per-prompt shaping are equivalent).
    """
    r_T, r_NT = reward(pairs.h_T), reward(pairs.h_NT)
    metrics = classification_metrics(r_T, r_NT)
    if pairs.gt_T is not None and pairs.gt_NT is not None:
        groups = None
        if pairs.prompt_ids is not None:
            groups = np.concatenate([pairs.prompt_ids, pairs.prompt_ids])
        metrics["starc"] = starc(np.concatenate([r_T, r_NT]),
                                 np.concatenate([pairs.gt_T, pairs.gt_NT]), groups)
    return metrics
