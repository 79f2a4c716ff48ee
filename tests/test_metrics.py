import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from fairl.metrics import classification_metrics, starc


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_starc_zero_for_positive_scale_and_shift(rng):
    r = rng.standard_normal(500)
    assert starc(3.7 * r + 12.0, r) == pytest.approx(0.0, abs=1e-7)


def test_starc_one_for_the_negation(rng):
    r = rng.standard_normal(500)
    assert starc(-2.0 * r + 1.0, r) == pytest.approx(1.0, abs=1e-7)


def test_starc_matches_pearson_formula_on_random_vectors(rng):
    for _ in range(5):
        a, b = rng.standard_normal(300), rng.standard_normal(300)
        rho = pearsonr(a, b).statistic
        assert starc(a, b) == pytest.approx(np.sqrt((1 - rho) / 2), abs=1e-9)


def test_starc_invariant_to_per_group_shifts(rng):
    groups = np.repeat(np.arange(50), 4)
    r_true = rng.standard_normal(200)
    r_pred = r_true + 0.3 * rng.standard_normal(200)
    shifted = r_pred + rng.standard_normal(50)[groups] * 10  # potential shaping per prompt
    assert starc(shifted, r_true, groups) == pytest.approx(starc(r_pred, r_true, groups), abs=1e-9)
    # without groups the shift does change the distance
    assert abs(starc(shifted, r_true) - starc(r_pred, r_true)) > 0.05


def test_starc_is_in_unit_interval_and_constant_reward_is_half(rng):
    r = rng.standard_normal(100)
    assert 0.0 <= starc(rng.standard_normal(100), r) <= 1.0
    assert starc(np.full(100, 5.0), r) == pytest.approx(0.5)


def test_starc_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        starc(np.zeros(3), np.zeros(4))


def test_classification_metrics_equal_sklearn(rng):
    r_T = rng.standard_normal(400) + 0.8
    r_NT = rng.standard_normal(400)
    metrics = classification_metrics(r_T, r_NT)
    scores = np.concatenate([r_T, r_NT])
    labels = np.r_[np.ones(400), np.zeros(400)]
    threshold = (r_T.mean() + r_NT.mean()) / 2
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, scores > threshold))
    assert metrics["f1"] == pytest.approx(f1_score(labels, scores > threshold))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["pairwise_accuracy"] == pytest.approx(np.mean(r_T > r_NT))


def test_perfect_and_reversed_rewards():
    r_T, r_NT = np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0, 1.0])
    perfect = classification_metrics(r_T, r_NT)
    assert perfect == {"accuracy": 1.0, "f1": 1.0, "roc_auc": 1.0, "pairwise_accuracy": 1.0}
    reversed_ = classification_metrics(r_NT, r_T)
    assert reversed_["roc_auc"] == 0.0 and reversed_["pairwise_accuracy"] == 0.0


@pytest.mark.parametrize("shift", [0.8, 0.0, -3.0])
def test_classification_metrics_equal_sklearn_with_ties(rng, shift):
    """Rounded scores: many ties, where a hand-counted AUC most easily goes wrong."""
    r_T = np.round(rng.standard_normal(301) + shift)
    r_NT = np.round(rng.standard_normal(301))
    metrics = classification_metrics(r_T, r_NT)
    scores, labels = np.concatenate([r_T, r_NT]), np.r_[np.ones(301), np.zeros(301)]
    predicted = scores > (r_T.mean() + r_NT.mean()) / 2
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-12)
    assert metrics["f1"] == pytest.approx(f1_score(labels, predicted, zero_division=0),
                                          abs=1e-12)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_is_the_mid_rank_statistic_exactly_and_nan_with_a_nan_score(rng):
    """The binary-search count gives scipy's mid-rank U bit for bit (ties, +inf ties included)."""
    from scipy.stats import rankdata

    r_T = np.round(rng.standard_normal(500) * 3) / 3
    r_NT = np.round(rng.standard_normal(500) * 3) / 3
    r_T[:3], r_NT[:2] = np.inf, np.inf  # tied at +inf
    ranks = rankdata(np.concatenate([r_T, r_NT]))
    mid_ranks = (ranks[:500].sum() - 500 * 501 / 2) / 500**2
    assert classification_metrics(r_T, r_NT)["roc_auc"] == mid_ranks
    r_NT[7] = np.nan
    assert np.isnan(classification_metrics(r_T, r_NT)["roc_auc"])
