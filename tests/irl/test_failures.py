import numpy as np
import torch

from fairl.irl import FitConfig, fit, ground_truth_failures, margin_failures, sample_failures
from fairl.irl.failures import ensemble_failure_mask, ensemble_failures, failure_budget


def test_margin_failures_are_pairs_below_gamma():
    margins = torch.tensor([-1.0, 0.0, 0.2, 0.5, 3.0])
    assert margin_failures(margins, 0.0).tolist() == [True, False, False, False, False]
    assert margin_failures(margins, 0.5).tolist() == [True, True, True, False, False]


def test_ground_truth_failures_need_r_star_to_agree_with_the_label():
    margins = torch.tensor([-1.0, -1.0, 0.3, 2.0])
    gt_margins = torch.tensor([1.0, -1.0, 0.5, 0.5])
    # pair 1: r* itself prefers the base output -> never a failure
    assert ground_truth_failures(margins, gt_margins, 0.0).tolist() == [True, False, False, False]
    assert ground_truth_failures(margins, gt_margins, 1.0).tolist() == [True, False, True, False]


def test_failure_budget_readings():
    assert failure_budget(50, 1000, 0.2, "of_failures") == 10
    assert failure_budget(50, 1000, 0.2, "of_batch") == 50  # capped by |F_t|
    assert failure_budget(500, 1000, 0.2, "of_batch") == 200
    assert failure_budget(7, 1000, 0.0, "of_failures") == 0
    assert failure_budget(7, 1000, 0.01, "of_failures") == 1  # ceil: any p > 0 keeps one


def test_sample_failures_random_is_seeded_subset():
    margins = torch.linspace(-1, 1, 20)
    mask = margins < 0.5
    pick = sample_failures(mask, margins, 5, "random", torch.Generator().manual_seed(0))
    again = sample_failures(mask, margins, 5, "random", torch.Generator().manual_seed(0))
    assert pick.tolist() == again.tolist()
    assert len(set(pick.tolist())) == 5 and mask[pick].all()


def test_sample_failures_hardest_takes_lowest_margins():
    margins = torch.tensor([0.3, -2.0, 0.1, -0.5, 5.0])
    mask = margins < 1.0
    pick = sample_failures(mask, margins, 2, "hardest", torch.Generator())
    assert sorted(pick.tolist()) == [1, 3]


def test_sample_failures_returns_all_when_budget_exceeds():
    margins = torch.tensor([0.3, -2.0, 5.0])
    pick = sample_failures(margins < 1.0, margins, 10, "random", torch.Generator())
    assert sorted(pick.tolist()) == [0, 1]


def _contradictory_pairs(seed: int = 0):
    """40 clear pairs along e1 and 20 contradictory ones (±e2): only the latter are ambiguous."""
    rng = np.random.default_rng(seed)
    clear = np.column_stack([np.ones(40), 0.1 * rng.standard_normal(40)])
    contradictory = np.array([[0.0, 1.0]] * 10 + [[0.0, -1.0]] * 10)
    diffs = np.concatenate([clear, contradictory]).astype(np.float32)
    return diffs, np.r_[np.zeros(40, bool), np.ones(20, bool)]


def test_ensemble_failures_are_sign_disagreements():
    margins = torch.tensor([[1.0, -1.0, 0.5, 0.0], [2.0, -0.5, -0.5, 0.0], [0.1, -2.0, 1.0, 0.3]])
    assert ensemble_failures(margins).tolist() == [False, False, True, True]


def test_bootstrap_ensemble_disagrees_on_contradictory_pairs_only():
    diffs, ambiguous = _contradictory_pairs()
    for objective in ("max_entropy", "max_margin"):
        config = FitConfig(objective=objective, failure_mode="ensemble", ensemble_size=8,
                           rounds=100, seed=0)
        mask = ensemble_failure_mask(torch.from_numpy(diffs), config).numpy()
        assert not mask[~ambiguous].any(), objective
        assert mask[ambiguous].all(), objective


def test_fit_with_ensemble_failures_trains_the_failure_head_on_them():
    diffs, ambiguous = _contradictory_pairs()
    h_NT = np.zeros_like(diffs)
    config = FitConfig(objective="max_entropy", failure_mode="ensemble", ensemble_size=8,
                       rounds=30, p0=1.0, p_end=1.0, seed=0)
    result = fit(diffs, h_NT, config)
    assert np.all(result.failure_counts[ambiguous] == 30)  # a static set: every round
    assert np.all(result.failure_counts[~ambiguous] == 0)
    assert np.abs(result.theta_F).sum() > 0
