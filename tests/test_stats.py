import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests

from fairl.metrics import classification_metrics, starc
from fairl.stats import (
    ACCURACY,
    F1,
    PAIRWISE_ACCURACY,
    ROC_AUC,
    STARC,
    BootstrapComparison,
    contrast_bootstrap,
    holm,
    minimum_detectable_effect,
    paired_bootstrap,
    verdict,
    verdicts,
)


def _world(rng, n_prompts=30, n_seeds=4, noise_a=0.5, noise_b=0.7):
    """Pairs clustered in prompts (1-4 pairs each), r*, and noisy per-seed rewards of A and B."""
    prompt_ids = np.repeat(rng.permutation(n_prompts) * 10, rng.integers(1, 5, n_prompts))
    n = len(prompt_ids)
    gt_T, gt_NT = rng.standard_normal(n) + 0.5, rng.standard_normal(n)
    shift = rng.standard_normal((n_seeds, n_prompts * 10))[:, prompt_ids]  # per-prompt shaping

    def rewards(scale):
        return (gt_T + shift + scale * rng.standard_normal((n_seeds, n)),
                gt_NT + shift + scale * rng.standard_normal((n_seeds, n)))

    return prompt_ids, (gt_T, gt_NT), rewards(noise_a), rewards(noise_b)


def test_vectorised_starc_equals_metrics_starc_on_resampled_prompts():
    rng = np.random.default_rng(0)
    prompt_ids, (gt_T, gt_NT), (R_T, R_NT), _ = _world(rng)
    prompts, codes = np.unique(prompt_ids, return_inverse=True)
    values = STARC.prepare(R_T, R_NT, gt_T, gt_NT, codes, len(prompts))
    for _ in range(3):
        drawn = rng.integers(0, len(prompts), len(prompts))
        weights = np.bincount(drawn, minlength=len(prompts)).astype(float)
        # explicit resampled data: every drawn copy of a prompt is its own group
        rows = [np.flatnonzero(codes == p) for p in drawn]
        index = np.concatenate(rows)
        copy = np.concatenate([np.full(len(r), j) for j, r in enumerate(rows)])
        for s in range(len(R_T)):
            explicit = starc(np.r_[R_T[s, index], R_NT[s, index]],
                             np.r_[gt_T[index], gt_NT[index]], np.r_[copy, copy])
            assert values(weights[None])[0, s] == pytest.approx(explicit, abs=1e-10)


def test_one_replicate_equals_explicit_prompt_and_seed_resampling():
    rng = np.random.default_rng(1)
    prompt_ids, gt, a, b = _world(rng, n_seeds=5)
    result = paired_bootstrap(STARC, a, b, prompt_ids, gt, n_boot=1, rng=7)
    # the draws paired_bootstrap makes: prompts first, then seeds (same for A and B)
    draw = np.random.default_rng(7)
    prompts, codes = np.unique(prompt_ids, return_inverse=True)
    drawn_prompts = draw.integers(0, len(prompts), (1, len(prompts)))[0]
    drawn_seeds = draw.integers(0, 5, (1, 5))[0]
    rows = [np.flatnonzero(codes == p) for p in drawn_prompts]
    index = np.concatenate(rows)
    copy = np.concatenate([np.full(len(r), j) for j, r in enumerate(rows)])

    def value(rewards):
        return np.mean([starc(np.r_[rewards[0][s, index], rewards[1][s, index]],
                              np.r_[gt[0][index], gt[1][index]], np.r_[copy, copy])
                        for s in drawn_seeds])

    assert result.ci_low == pytest.approx(value(a) - value(b), abs=1e-10)


def test_point_estimates_are_seed_means_of_the_plain_metrics():
    rng = np.random.default_rng(2)
    prompt_ids, gt, a, b = _world(rng)
    groups = np.r_[prompt_ids, prompt_ids]
    result = paired_bootstrap(STARC, a, b, prompt_ids, gt, n_boot=10)
    expected = [np.mean([starc(np.r_[r[0][s], r[1][s]], np.r_[gt[0], gt[1]], groups)
                         for s in range(len(r[0]))]) for r in (a, b)]
    assert (result.a, result.b) == pytest.approx(expected, abs=1e-10)
    accuracy = paired_bootstrap(PAIRWISE_ACCURACY, a, b, prompt_ids, n_boot=10)
    expected = np.mean([classification_metrics(a[0][s], a[1][s])["pairwise_accuracy"]
                        for s in range(len(a[0]))])
    assert accuracy.a == pytest.approx(expected)


def _plain_loop_bootstrap(name, a, b, prompt_ids, n_boot, seed):
    """An independent bootstrap: rebuild each replicate's data row by row (the same draws as
    paired_bootstrap: prompts, then seeds) and score it with fairl.metrics."""
    draw = np.random.default_rng(seed)
    prompts, codes = np.unique(prompt_ids, return_inverse=True)
    n_seeds = len(a[0])
    prompt_draws = draw.integers(0, len(prompts), (n_boot, len(prompts)))
    seed_draws = draw.integers(0, n_seeds, (n_boot, n_seeds))
    differences = []
    for drawn_prompts, drawn_seeds in zip(prompt_draws, seed_draws):
        index = np.concatenate([np.flatnonzero(codes == p) for p in drawn_prompts])
        means = [np.mean([classification_metrics(arm[0][s, index], arm[1][s, index])[name]
                          for s in drawn_seeds]) for arm in (a, b)]
        differences.append(means[0] - means[1])
    differences = np.array(differences)
    return (*np.quantile(differences, [0.025, 0.975]), differences.std(ddof=1))


@pytest.mark.parametrize("metric", [ACCURACY, F1, ROC_AUC], ids=lambda m: m.name)
def test_classification_intervals_match_a_plain_loop_bootstrap(metric):
    rng = np.random.default_rng(9)
    prompt_ids, _, a, b = _world(rng, n_prompts=25, n_seeds=3)
    # ties inside and across the classes (rounded scores) exercise ROC-AUC's half counts
    a = tuple(np.round(r, 1) for r in a)
    result = paired_bootstrap(metric, a, b, prompt_ids, n_boot=200, rng=13)
    low, high, se = _plain_loop_bootstrap(metric.name, a, b, prompt_ids, 200, 13)
    assert (result.ci_low, result.ci_high, result.se) == pytest.approx((low, high, se),
                                                                       abs=1e-3)
    assert result.ci_low < result.ci_high
    expected = [np.mean([classification_metrics(arm[0][s], arm[1][s])[metric.name]
                         for s in range(3)]) for arm in (a, b)]
    assert (result.a, result.b) == pytest.approx(expected, abs=1e-12)


def test_a_contrast_of_four_arms_is_the_difference_of_two_paired_differences():
    rng = np.random.default_rng(10)
    prompt_ids, gt, a, b = _world(rng)
    _, _, c, d = _world(np.random.default_rng(10), noise_a=0.3, noise_b=0.9)
    both = contrast_bootstrap(STARC, [a, b, c, d], [1, -1, -1, 1], prompt_ids, gt, n_boot=1,
                              rng=3)
    first = paired_bootstrap(STARC, a, b, prompt_ids, gt, n_boot=1, rng=3)
    second = paired_bootstrap(STARC, c, d, prompt_ids, gt, n_boot=1, rng=3)
    assert both.ci_low == pytest.approx(first.ci_low - second.ci_low, abs=1e-12)
    assert both.difference == pytest.approx(first.difference - second.difference, abs=1e-12)
    with pytest.raises(ValueError, match="contrast weights"):
        contrast_bootstrap(STARC, [a, b], [1.0], prompt_ids, gt)


def test_percentile_interval_covers_the_true_difference_about_95_percent():
    """Generative model: per-prompt difficulty shared by A and B, per-seed offsets, pair noise."""
    rng = np.random.default_rng(3)
    mu_a, mu_b, sd_prompt, sd_seed = 0.6, 0.4, 0.8, 0.15
    scale = np.sqrt(sd_prompt**2 + sd_seed**2 + 1)
    true_diff = norm.cdf(mu_a / scale) - norm.cdf(mu_b / scale)  # pairwise accuracy A − B
    covered = []
    for _ in range(200):
        n_prompts, n_seeds = 40, 5
        prompt_ids = np.repeat(np.arange(n_prompts), rng.integers(1, 6, n_prompts))
        n = len(prompt_ids)
        difficulty = sd_prompt * rng.standard_normal(n_prompts)[prompt_ids]  # shared by A, B
        gap_a, gap_b = (mu + difficulty + sd_seed * rng.standard_normal((n_seeds, 1))
                        + rng.standard_normal((n_seeds, n)) for mu in (mu_a, mu_b))
        zeros = np.zeros((n_seeds, n))
        result = paired_bootstrap(PAIRWISE_ACCURACY, (gap_a, zeros), (gap_b, zeros),
                                  prompt_ids, n_boot=500, rng=rng)
        covered.append(result.ci_low <= true_diff <= result.ci_high)
    rate = np.mean(covered)
    print(f"coverage of the 95 % interval over 200 repetitions: {rate:.3f}")
    assert 0.90 <= rate <= 0.99


def test_identical_methods_give_no_detectable_difference():
    rng = np.random.default_rng(4)
    prompt_ids, gt, a, _ = _world(rng)
    result = paired_bootstrap(STARC, a, a, prompt_ids, gt, n_boot=500, rng=rng)
    assert result.difference == 0 and result.p_value == 1.0 and result.prob_a_better == 0.5
    assert verdicts([result])[0].verdict == "no detectable difference"


def test_exchangeable_methods_give_no_detectable_difference():
    rng = np.random.default_rng(5)
    prompt_ids, gt, a, b = _world(rng, n_prompts=60, noise_a=0.6, noise_b=0.6)
    rows = verdicts([paired_bootstrap(m, a, b, prompt_ids, gt, n_boot=1000, rng=rng)
                     for m in (STARC, PAIRWISE_ACCURACY)])
    assert [row.verdict for row in rows] == ["no detectable difference"] * 2
    assert all("MDE" in row.text for row in rows)


def test_a_clear_improvement_is_better_for_starc_and_accuracy():
    rng = np.random.default_rng(6)
    prompt_ids, gt, a, b = _world(rng, n_prompts=80, noise_a=0.2, noise_b=1.5)
    rows = verdicts([paired_bootstrap(m, a, b, prompt_ids, gt, n_boot=1000, rng=rng)
                     for m in (STARC, PAIRWISE_ACCURACY)])
    assert [row.verdict for row in rows] == ["better", "better"]
    reverse = paired_bootstrap(STARC, b, a, prompt_ids, gt, n_boot=1000, rng=rng)
    assert verdicts([reverse])[0].verdict == "worse" and reverse.prob_a_better < 0.05
    assert rows[0].comparison.mde == pytest.approx(2.8016 * rows[0].comparison.se, rel=1e-4)


def test_holm_equals_statsmodels_and_hand_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    p = np.array([0.2, 0.001, 0.049, 0.012, 0.5, 0.03])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    assert len(holm([])) == 0


def test_verdicts_use_holm_adjusted_p_and_metric_orientation():
    def row(metric, lower, diff, p):
        return BootstrapComparison(metric, lower, 0.0, 0.0, diff, diff - 1, diff + 1, 0.01, p,
                                   0.5, 0.028, 10, 5, 100)

    rows = verdicts([row("starc", True, -0.1, 0.01), row("f1", False, 0.1, 0.04),
                     row("roc_auc", False, -0.1, 0.03)])
    assert [r.p_adjusted for r in rows] == pytest.approx([0.03, 0.06, 0.06])
    assert [r.verdict for r in rows] == ["better", "no detectable difference",
                                         "no detectable difference"]
    assert verdict(0.1, 0.01, lower_is_better=True) == "worse"
    assert verdict(-0.1, 0.01, lower_is_better=False) == "worse"
    assert minimum_detectable_effect(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)


def test_fixed_generator_seed_is_deterministic():
    rng = np.random.default_rng(7)
    prompt_ids, gt, a, b = _world(rng)
    first = paired_bootstrap(STARC, a, b, prompt_ids, gt, n_boot=300, rng=11)
    again = paired_bootstrap(STARC, a, b, prompt_ids, gt, n_boot=300,
                             rng=np.random.default_rng(11))
    other = paired_bootstrap(STARC, a, b, prompt_ids, gt, n_boot=300, rng=12)
    assert first == again
    assert first.ci_low != other.ci_low and first.difference == other.difference


def test_mismatched_shapes_raise_clear_errors():
    rng = np.random.default_rng(8)
    prompt_ids, gt, a, b = _world(rng)
    with pytest.raises(ValueError, match="paired seeds"):
        paired_bootstrap(STARC, a, (b[0][:2], b[1][:2]), prompt_ids, gt)
    with pytest.raises(ValueError, match="must both be"):
        paired_bootstrap(STARC, (a[0], a[1][:, :-1]), b, prompt_ids, gt)
    with pytest.raises(ValueError, match="n_pairs"):
        paired_bootstrap(PAIRWISE_ACCURACY, a, b, prompt_ids[:-1])
    with pytest.raises(ValueError, match="like prompt_ids"):
        paired_bootstrap(STARC, a, b, prompt_ids[:-1], gt)
    with pytest.raises(ValueError, match="gt_T"):
        paired_bootstrap(STARC, a, b, prompt_ids, (gt[0][:-1], gt[1]))
    with pytest.raises(ValueError, match="true rewards"):
        paired_bootstrap(STARC, a, b, prompt_ids)
    with pytest.raises(ValueError, match="one-dimensional"):
        holm(np.zeros((2, 2)))
