"""Uncertainty that includes the data: a paired bootstrap over prompts and seeds, Holm, verdicts.

A study fits method A and method B with S paired seeds and scores both on the same held-out
pairs. `paired_bootstrap` resamples prompts (clusters of pairs) and seeds together, so its
interval covers both the choice of test prompts and the optimiser noise; `verdicts` turns a
table of such comparisons into Holm-adjusted words, each with its minimum detectable effect.

Metrics are functions of per-prompt sums (`PromptMetric`): a bootstrap replicate is then a
(B × P) matrix of prompt counts times a (P × k) table of per-prompt statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

Rewards = tuple[np.ndarray, np.ndarray]  # (R_T, R_NT), each (S, n): seed s, pair i


@dataclass(frozen=True)
class PromptMetric:
    """A metric that is `combine(Σ_p w_p · stats_p)` for per-prompt statistics and weights w.

    `per_prompt(R_T, R_NT, gt_T, gt_NT, codes, n_prompts)` maps (S, n) rewards to (S, P, k)
    statistics; `combine` maps (..., k) weighted sums to (...) metric values.
    """

    name: str
    lower_is_better: bool
    per_prompt: Callable[..., np.ndarray]
    combine: Callable[[np.ndarray], np.ndarray]


def _group_sum(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum (..., m) values over the last axis into (..., n_groups) by integer group codes."""
    lead = values.shape[:-1]
    rows = int(np.prod(lead))
    index = codes[None, :] + n_groups * np.arange(rows)[:, None]
    sums = np.bincount(index.ravel(), weights=values.reshape(rows, -1).ravel(),
                       minlength=rows * n_groups)
    return sums.reshape(*lead, n_groups)


def _starc_per_prompt(R_T, R_NT, gt_T, gt_NT, codes, n_prompts) -> np.ndarray:
    """Per prompt: Σc_pred², Σc_true², Σc_pred·c_true of the per-prompt centred rewards of
    all 2m outputs (the centring of fairl.metrics._canonicalise)."""
    if gt_T is None or gt_NT is None:
        raise ValueError("STARC needs the true rewards gt_T and gt_NT")
    groups = np.concatenate([codes, codes])
    pred = np.concatenate([R_T, R_NT], axis=1)
    true = np.concatenate([gt_T, gt_NT])[None, :]
    counts = np.bincount(groups, minlength=n_prompts)
    c_pred = pred - (_group_sum(pred, groups, n_prompts) / counts)[:, groups]
    c_true = true - (_group_sum(true, groups, n_prompts) / counts)[:, groups]
    c_true = np.broadcast_to(c_true, c_pred.shape)
    return np.stack([_group_sum(c_pred**2, groups, n_prompts),
                     _group_sum(c_true**2, groups, n_prompts),
                     _group_sum(c_pred * c_true, groups, n_prompts)], axis=-1)


def _starc_combine(sums: np.ndarray) -> np.ndarray:
    """STARC² = ¼·(|a|² + |b|² − 2a·b) of the normalised vectors; a zero vector stays zero.

    As fairl.metrics.starc with duplicated prompts as separate groups: the per-prompt centring
    does not depend on which prompts are drawn, so the sums are weighted per-prompt sums.
    """
    s_pp, s_tt, s_pt = sums[..., 0], sums[..., 1], sums[..., 2]
    has_p, has_t = (s_pp > 1e-24).astype(float), (s_tt > 1e-24).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(has_p * has_t > 0, s_pt / np.sqrt(s_pp * s_tt), 0.0)
    return np.sqrt(np.clip(0.25 * (has_p + has_t - 2 * cos), 0.0, 1.0))


def _accuracy_per_prompt(R_T, R_NT, gt_T, gt_NT, codes, n_prompts) -> np.ndarray:
    """Per prompt: number of pairs with R_T > R_NT, number of pairs."""
    correct = _group_sum((R_T > R_NT).astype(np.float64), codes, n_prompts)
    counts = np.broadcast_to(np.bincount(codes, minlength=n_prompts).astype(float), correct.shape)
    return np.stack([correct, counts], axis=-1)


STARC = PromptMetric("starc", True, _starc_per_prompt, _starc_combine)
PAIRWISE_ACCURACY = PromptMetric("pairwise_accuracy", False, _accuracy_per_prompt,
                                 lambda sums: sums[..., 0] / sums[..., 1])


@dataclass(frozen=True)
class BootstrapComparison:
    """A − B for one metric: point estimate, percentile interval, bootstrap SE, p, MDE.

    `prob_a_better` is the fraction of bootstrap replicates in which A's seed-averaged metric
    is better than B's (lower for lower-is-better metrics; ties count ½) — a bootstrap
    probability of improvement, not rliable's P(X_A > X_B) over individual runs.
    `p_value` = min(1, 2·min(#{d* ≤ 0} + 1, #{d* ≥ 0} + 1) / (B + 1)): two-sided, inverting
    the percentile interval, so never below 2/(B + 1).
    `mde` = (z_0.975 + z_0.80)·SE: the |A − B| detectable with 80 % power at α = 0.05.
    """

    metric: str
    lower_is_better: bool
    a: float  # metric of A on the original data, mean over seeds
    b: float
    difference: float  # a - b
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    prob_a_better: float
    mde: float
    n_prompts: int
    n_seeds: int
    n_boot: int
    level: float = 0.95


def _check(rewards: Rewards, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    R_T, R_NT = (np.atleast_2d(np.asarray(r, dtype=np.float64)) for r in rewards)
    if R_T.shape != R_NT.shape or R_T.ndim != 2 or R_T.shape[1] != n:
        raise ValueError(f"{name}: R_T {R_T.shape} and R_NT {R_NT.shape} must both be "
                         f"(n_seeds, n_pairs={n})")
    return R_T, R_NT


def paired_bootstrap(metric: PromptMetric, a: Rewards, b: Rewards, prompt_ids: np.ndarray,
                     gt: Rewards | None = None, *, n_boot: int = 5000,
                     rng: np.random.Generator | int = 0, level: float = 0.95,
                     ) -> BootstrapComparison:
    """Paired two-level bootstrap of metric(A) − metric(B) over prompts and seeds.

    Each replicate draws P prompts with replacement (a prompt carries all its pairs; the
    same prompts for A and B) and S seed indices with replacement (the same for A and B),
    and compares the seed-averaged metrics (Davison & Hinkley 1997, §3.8 multistage
    resampling; percentile interval, §5.3). Hand-written because scipy.stats.bootstrap and
    rliable resample one level only. `a`, `b` = (R_T, R_NT) of shape (S, n); `gt` = r*.
    Prompts × seeds are crossed: resampling both is conservative when pair noise dominates
    (Owen 2007, pigeonhole bootstrap) and, with ~5 seeds, short when seed noise dominates.
    """
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim != 1 or len(prompt_ids) == 0:
        raise ValueError(f"prompt_ids must be a non-empty (n,) array, got {prompt_ids.shape}")
    n = len(prompt_ids)
    (a_T, a_NT), (b_T, b_NT) = _check(a, n, "a"), _check(b, n, "b")
    if a_T.shape[0] != b_T.shape[0]:
        raise ValueError(f"paired seeds: a has {a_T.shape[0]} seeds, b has {b_T.shape[0]}")
    gt_T = gt_NT = None
    if gt is not None:
        gt_T, gt_NT = (np.asarray(g, dtype=np.float64) for g in gt)
        if gt_T.shape != (n,) or gt_NT.shape != (n,):
            raise ValueError(f"gt_T {gt_T.shape} and gt_NT {gt_NT.shape} must both be ({n},)")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(rng)
    _, codes = np.unique(prompt_ids, return_inverse=True)
    n_prompts, n_seeds = int(codes.max()) + 1, a_T.shape[0]

    stats = [metric.per_prompt(R_T, R_NT, gt_T, gt_NT, codes, n_prompts)  # (S, P, k)
             for R_T, R_NT in ((a_T, a_NT), (b_T, b_NT))]
    point_a, point_b = (float(metric.combine(s.sum(axis=1)).mean()) for s in stats)

    prompt_w = _counts(rng.integers(0, n_prompts, (n_boot, n_prompts)), n_prompts)  # (B, P)
    seed_w = _counts(rng.integers(0, n_seeds, (n_boot, n_seeds)), n_seeds) / n_seeds  # (B, S)
    boot_a, boot_b = ((seed_w * metric.combine(_weighted_sums(prompt_w, s))).sum(1)
                      for s in stats)
    diff = boot_a - boot_b
    sign = -1.0 if metric.lower_is_better else 1.0
    prob_better = float(np.mean(sign * diff > 0) + 0.5 * np.mean(diff == 0))
    tail = (1 - level) / 2
    low, high = np.quantile(diff, [tail, 1 - tail])
    p = 2 * min(np.sum(diff <= 0) + 1, np.sum(diff >= 0) + 1) / (n_boot + 1)
    se = float(diff.std(ddof=1)) if n_boot > 1 else 0.0
    return BootstrapComparison(
        metric=metric.name, lower_is_better=metric.lower_is_better, a=point_a, b=point_b,
        difference=point_a - point_b, ci_low=float(low), ci_high=float(high), se=se,
        p_value=float(min(1.0, p)), prob_a_better=prob_better, mde=minimum_detectable_effect(se),
        n_prompts=n_prompts, n_seeds=n_seeds, n_boot=n_boot, level=level)


def _weighted_sums(prompt_w: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """(B, P) prompt weights × (S, P, k) per-prompt statistics → (B, S, k), as one matmul."""
    n_seeds, n_prompts, k = stats.shape
    flat = stats.transpose(1, 0, 2).reshape(n_prompts, n_seeds * k)
    return (prompt_w @ flat).reshape(len(prompt_w), n_seeds, k)


def _counts(draws: np.ndarray, size: int) -> np.ndarray:
    """(B, k) integer draws in [0, size) → (B, size) float multiplicities (how often each)."""
    rows = draws.shape[0]
    index = draws + size * np.arange(rows)[:, None]
    return np.bincount(index.ravel(), minlength=rows * size).reshape(rows, size).astype(float)


def minimum_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.80) -> float:
    """(z_{1−α/2} + z_power)·SE: the smallest true |difference| that a two-sided z-test at
    level α finds with that power (Cohen 1988, ch. 12)."""
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (Holm 1979) across the rows of a table, via statsmodels."""
    p_values = np.asarray(p_values, dtype=np.float64)
    if p_values.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p_values.shape}")
    if len(p_values) == 0:
        return p_values.copy()
    return multipletests(p_values, method="holm")[1]


def verdict(difference: float, p_adjusted: float, lower_is_better: bool,
            alpha: float = 0.05) -> str:
    """'better' / 'worse' (A vs B, by the metric's orientation) when p_adjusted < α, else
    'no detectable difference'."""
    if not p_adjusted < alpha or difference == 0:
        return "no detectable difference"
    return "better" if (difference < 0) == lower_is_better else "worse"


@dataclass(frozen=True)
class Verdict:
    """One table row: the comparison, its Holm-adjusted p, the verdict and a sentence."""

    comparison: BootstrapComparison
    p_adjusted: float
    verdict: str
    text: str


def verdicts(comparisons: Sequence[BootstrapComparison], alpha: float = 0.05) -> list[Verdict]:
    """Holm-adjust the rows' bootstrap p-values together and state each verdict with its MDE."""
    adjusted = holm([c.p_value for c in comparisons])
    rows = []
    for c, p in zip(comparisons, adjusted, strict=True):
        word = verdict(c.difference, float(p), c.lower_is_better, alpha)
        text = (f"{c.metric}: {word} (A − B = {c.difference:+.4f}, {100 * c.level:g} % CI "
                f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}], Holm p = {p:.3g}; "
                f"MDE {c.mde:.4f} at 80 % power; {c.n_prompts} prompts × {c.n_seeds} seeds)")
        rows.append(Verdict(comparison=c, p_adjusted=float(p), verdict=word, text=text))
    return rows
