"""Uncertainty that includes the data: a paired bootstrap over prompts and seeds, Holm, verdicts.

A study fits method A and method B with S paired seeds and scores both on the same held-out
pairs. `paired_bootstrap` resamples prompts (clusters of pairs) and seeds together, so its
interval covers both the choice of test prompts and the optimiser noise; `verdicts` turns a
table of such comparisons into Holm-adjusted words, each with its minimum detectable effect.

A metric (`PromptMetric`) is re-weighted by prompt multiplicities: STARC and pairwise accuracy
are functions of per-prompt sums (a replicate is a (B × P) matrix of prompt counts times a
(P × k) table of per-prompt statistics); accuracy and F1 weight every pair by its prompt's
count (scores sorted once per seed, a threshold per replicate); ROC-AUC is the quadratic form
wᵀCw of the prompt counts w in per-prompt win counts C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Rewards = tuple[np.ndarray, np.ndarray]  # (R_T, R_NT), each (S, n): seed s, pair i


@dataclass(frozen=True)
class PromptMetric:
    """A held-out metric a bootstrap can re-weight by prompt (a prompt drawn w times counts as
    w copies of all its pairs).

    `prepare(R_T, R_NT, gt_T, gt_NT, codes, n_prompts)` takes (S, n) rewards and returns
    `values(prompt_weights)`: (B, P) prompt multiplicities -> (B, S) metric values per seed.
    """

    name: str
    lower_is_better: bool
    prepare: Callable[..., Callable[[np.ndarray], np.ndarray]]


def _group_sum(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum (..., m) values over the last axis into (..., n_groups) by integer group codes."""
    lead = values.shape[:-1]
    rows = int(np.prod(lead))
    index = codes[None, :] + n_groups * np.arange(rows)[:, None]
    sums = np.bincount(index.ravel(), weights=values.reshape(rows, -1).ravel(),
                       minlength=rows * n_groups)
    return sums.reshape(*lead, n_groups)


def additive(per_prompt: Callable[..., np.ndarray], combine: Callable[[np.ndarray], np.ndarray]):
    """`prepare` of a metric that is combine(Σ_p w_p · stats_p): one (B × P) @ (P × S·k) product
    per bootstrap, given per-prompt statistics (S, P, k)."""
    def prepare(R_T, R_NT, gt_T, gt_NT, codes, n_prompts):
        stats = per_prompt(R_T, R_NT, gt_T, gt_NT, codes, n_prompts)
        return lambda prompt_w: combine(_weighted_sums(prompt_w, stats))
    return prepare


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


BLOCK = 512  # bootstrap replicates per block when a (replicates × outputs) array is needed


def _above(scores, codes, n_prompts, prompt_w, thresholds) -> np.ndarray:
    """(B,) Σ_i w_p(i)·[scores_i > t_b] for a threshold t_b per replicate.

    With the scores sorted and k_b = #{scores <= t_b}: the outputs beyond the largest k count
    through per-prompt counts; those in the band between the smallest and the largest k (few:
    the replicates' thresholds are close) through per-prompt counts from each position on,
    so a replicate costs one (P,) gather and dot product.
    """
    order = np.argsort(scores, kind="stable")
    k = np.searchsorted(scores[order], thresholds, side="right")  # (B,)
    low, high = int(k.min()), int(k.max())
    beyond = np.bincount(codes[order[high:]], minlength=n_prompts).astype(float)
    band = codes[order[low:high]]
    onehot = np.zeros((len(band) + 1, n_prompts))
    onehot[np.arange(len(band)), band] = 1.0
    from_position = np.cumsum(onehot[::-1], axis=0)[::-1]  # row j: band outputs j.. per prompt
    total = prompt_w @ beyond
    for start in range(0, len(prompt_w), BLOCK):
        rows = slice(start, start + BLOCK)
        total[rows] += (prompt_w[rows] * from_position[k[rows] - low]).sum(1)
    return total


def _wins_by_prompt(r_T, r_NT, codes, n_prompts) -> np.ndarray:
    """(P, P) C[p, q] = Σ_{i ∈ p, j ∈ q} [R_T,i > R_NT,j] + ½[R_T,i = R_NT,j], from the NT scores
    sorted once: per block of prompts q, cumulative counts of q's NT outputs along the order."""
    order = np.argsort(r_NT, kind="stable")
    sorted_NT, codes_NT = r_NT[order], codes[order]
    below = np.searchsorted(sorted_NT, r_T, side="left")  # NT outputs strictly below R_T,i
    upto = np.searchsorted(sorted_NT, r_T, side="right")
    wins = np.empty((n_prompts, n_prompts))
    width = max(1, (1 << 22) // (len(r_NT) + 1))  # prompts per block: (n + 1) × width floats
    for first in range(0, n_prompts, width):
        block = np.arange(first, min(first + width, n_prompts))
        onehot = codes_NT[:, None] == block[None, :]  # (n, q)
        cumulative = np.concatenate([np.zeros((1, len(block))), np.cumsum(onehot, 0)])
        per_T = 0.5 * (cumulative[below] + cumulative[upto])  # (n, q): ties count ½
        wins[:, block] = _group_sum(per_T.T, codes, n_prompts).T
    return wins


def _classification(statistic: str):
    """`prepare` of accuracy, F1 or ROC-AUC as fairl.metrics.classification_metrics computes
    them, on pairs weighted by their prompt's multiplicity w_p.

    With N = Σ_p w_p n_p: threshold t = Σ w·(R_T + R_NT) / 2N (the midpoint of the class
    means); TP = Σ w·[R_T > t], FP = Σ w·[R_NT > t]; accuracy = (TP + N − FP) / 2N,
    F1 = 2TP / (TP + FP + N); ROC-AUC = wᵀ C w / N² with C the per-prompt win counts.
    """
    def prepare(R_T, R_NT, gt_T, gt_NT, codes, n_prompts):
        counts = np.bincount(codes, minlength=n_prompts).astype(float)
        if statistic == "roc_auc":
            # float32 (twice as fast) is exact while the sums Σ_p w_p C_pq, multiples of ½ and
            # at most P·(max_p n_p)² (all P draws on the largest prompt), stay below 2^22
            exact = n_prompts * counts.max() ** 2 < 2**22
            dtype = np.float32 if exact else np.float64
            wins = np.concatenate([_wins_by_prompt(r_T, r_NT, codes, n_prompts)
                                   for r_T, r_NT in zip(R_T, R_NT)], 1).astype(dtype)

            def auc(prompt_w: np.ndarray) -> np.ndarray:
                total = prompt_w @ counts
                weighted = (prompt_w.astype(dtype) @ wins).astype(np.float64)  # (B, S·P)
                quadratic = (weighted.reshape(len(prompt_w), len(R_T), n_prompts)
                             * prompt_w[:, None, :]).sum(2)
                return quadratic / total[:, None] ** 2
            return auc
        score_sums = [np.bincount(codes, weights=r_T + r_NT, minlength=n_prompts)
                      for r_T, r_NT in zip(R_T, R_NT)]

        def values(prompt_w: np.ndarray) -> np.ndarray:
            total = prompt_w @ counts
            out = np.empty((len(prompt_w), len(R_T)))
            for s, (r_T, r_NT) in enumerate(zip(R_T, R_NT)):
                thresholds = (prompt_w @ score_sums[s]) / (2 * total)
                true_pos = _above(r_T, codes, n_prompts, prompt_w, thresholds)
                false_pos = _above(r_NT, codes, n_prompts, prompt_w, thresholds)
                if statistic == "accuracy":
                    out[:, s] = (true_pos + total - false_pos) / (2 * total)
                else:
                    out[:, s] = np.where(true_pos > 0, 2 * true_pos
                                         / np.maximum(true_pos + false_pos + total, 1e-300), 0.0)
            return out
        return values
    return prepare


STARC = PromptMetric("starc", True, additive(_starc_per_prompt, _starc_combine))
PAIRWISE_ACCURACY = PromptMetric("pairwise_accuracy", False, additive(
    _accuracy_per_prompt, lambda sums: sums[..., 0] / sums[..., 1]))
ACCURACY = PromptMetric("accuracy", False, _classification("accuracy"))
F1 = PromptMetric("f1", False, _classification("f1"))
ROC_AUC = PromptMetric("roc_auc", False, _classification("roc_auc"))


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
    return Bootstrap(prompt_ids, gt, n_boot=n_boot, rng=rng, level=level).contrast(
        metric, [a, b], [1.0, -1.0])


def contrast_bootstrap(metric: PromptMetric, arms: Sequence[Rewards], weights: Sequence[float],
                       prompt_ids: np.ndarray, gt: Rewards | None = None, *, n_boot: int = 5000,
                       rng: np.random.Generator | int = 0, level: float = 0.95,
                       ) -> BootstrapComparison:
    """The paired bootstrap of a contrast Σ_k c_k · metric(arm k) (see `Bootstrap.contrast`)."""
    return Bootstrap(prompt_ids, gt, n_boot=n_boot, rng=rng, level=level).contrast(
        metric, arms, weights)


class Bootstrap:
    """One set of prompt × seed draws over fixed test pairs, shared by every comparison on them.

    The draws are those of a fresh `rng`: B × P prompt indices first, then B × S seed indices
    (for S seeds; the same for every comparison with S seeds). An arm given with a `key` has
    its (B, S) replicate values computed once per metric (a study compares one reference run
    with many). State: the memo of those values.
    """

    def __init__(self, prompt_ids: np.ndarray, gt: Rewards | None = None, *,
                 n_boot: int = 5000, rng: np.random.Generator | int = 0, level: float = 0.95):
        prompt_ids = np.asarray(prompt_ids)
        if prompt_ids.ndim != 1 or len(prompt_ids) == 0:
            raise ValueError(f"prompt_ids must be a non-empty (n,) array, got {prompt_ids.shape}")
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {n_boot}")
        self.n, self.n_boot, self.level = len(prompt_ids), n_boot, level
        _, self.codes = np.unique(prompt_ids, return_inverse=True)
        self.n_prompts = int(self.codes.max()) + 1
        self.gt_T = self.gt_NT = None
        if gt is not None:
            self.gt_T, self.gt_NT = (np.asarray(g, dtype=np.float64) for g in gt)
            if self.gt_T.shape != (self.n,) or self.gt_NT.shape != (self.n,):
                raise ValueError(f"gt_T {self.gt_T.shape} and gt_NT {self.gt_NT.shape} must "
                                 f"both be ({self.n},) like prompt_ids")
        rng = np.random.default_rng(rng)
        self.prompt_w = _counts(rng.integers(0, self.n_prompts, (n_boot, self.n_prompts)),
                                self.n_prompts)  # (B, P)
        self._after_prompts = rng.bit_generator.state
        self._seed_w: dict[int, np.ndarray] = {}
        self._values: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def seed_weights(self, n_seeds: int) -> np.ndarray:
        """(B, S) seed multiplicities / S, drawn right after the prompts."""
        if n_seeds not in self._seed_w:
            rng = np.random.default_rng()
            rng.bit_generator.state = self._after_prompts
            self._seed_w[n_seeds] = _counts(rng.integers(0, n_seeds, (self.n_boot, n_seeds)),
                                            n_seeds) / n_seeds
        return self._seed_w[n_seeds]

    def values(self, metric: PromptMetric, arm: Rewards, key=None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(per-seed metric (S,), replicates (B, S)) of one arm; memoised under `key`."""
        if key is not None and (metric.name, key) in self._values:
            return self._values[(metric.name, key)]
        R_T, R_NT = _check(arm, self.n, "arm")
        value = metric.prepare(R_T, R_NT, self.gt_T, self.gt_NT, self.codes, self.n_prompts)
        result = value(np.ones((1, self.n_prompts)))[0], value(self.prompt_w)
        if key is not None:
            self._values[(metric.name, key)] = result
        return result

    def contrast(self, metric: PromptMetric, arms: Sequence[Rewards], weights: Sequence[float],
                 keys: Sequence | None = None) -> BootstrapComparison:
        """Σ_k c_k · metric(arm k), every arm scored on these pairs with the same S seeds.

        One replicate draws one set of prompts and seeds for all arms (e.g. c = (1, −1, −1, 1)
        on FA/std at a high and a low T→NT share: does the gain grow?). In the result `a` and
        `b` are the point values of the positive and of the negated negative part (for two
        arms: metric(A) and metric(B)).
        """
        if len(arms) != len(weights) or not arms:
            raise ValueError(f"{len(arms)} arms but {len(weights)} contrast weights")
        names = ["a", "b"] if len(arms) == 2 else [f"arm {k}" for k in range(len(arms))]
        arms = [_check(arm, self.n, name) for arm, name in zip(arms, names)]
        if len({R_T.shape[0] for R_T, _ in arms}) > 1:
            raise ValueError("paired seeds: " + ", ".join(
                f"{name} has {R_T.shape[0]} seeds" for name, (R_T, _) in zip(names, arms)))
        keys = keys or [None] * len(arms)
        n_seeds = arms[0][0].shape[0]
        seed_w = self.seed_weights(n_seeds)
        points, diff = [], np.zeros(self.n_boot)
        for c, arm, key in zip(weights, arms, keys):
            point, replicates = self.values(metric, arm, key)
            points.append(float(point.mean()))
            diff += c * (seed_w * replicates).sum(1)
        point_a = sum(c * p for c, p in zip(weights, points) if c > 0)
        point_b = -sum(c * p for c, p in zip(weights, points) if c < 0)
        sign = -1.0 if metric.lower_is_better else 1.0
        prob_better = float(np.mean(sign * diff > 0) + 0.5 * np.mean(diff == 0))
        tail = (1 - self.level) / 2
        low, high = np.quantile(diff, [tail, 1 - tail])
        p = 2 * min(np.sum(diff <= 0) + 1, np.sum(diff >= 0) + 1) / (self.n_boot + 1)
        se = float(diff.std(ddof=1)) if self.n_boot > 1 else 0.0
        return BootstrapComparison(
            metric=metric.name, lower_is_better=metric.lower_is_better, a=point_a, b=point_b,
            difference=point_a - point_b, ci_low=float(low), ci_high=float(high), se=se,
            p_value=float(min(1.0, p)), prob_a_better=prob_better,
            mde=minimum_detectable_effect(se), n_prompts=self.n_prompts, n_seeds=n_seeds,
            n_boot=self.n_boot, level=self.level)


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
    from scipy.stats import norm  # heavy (~1.5 s with statsmodels): loaded where a verdict is

    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (Holm 1979) across the rows of a table, via statsmodels."""
    p_values = np.asarray(p_values, dtype=np.float64)
    if p_values.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p_values.shape}")
    if len(p_values) == 0:
        return p_values.copy()
    from statsmodels.stats.multitest import multipletests  # heavy: see minimum_detectable_effect

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
