import torch

from fairl.irl import ground_truth_failures, margin_failures, sample_failures
from fairl.irl.failures import failure_budget


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
