import math

import numpy as np
import pytest
import torch

from fairl.irl import max_entropy_loss, max_margin_loss
from fairl.irl.losses import (
    hinge_pair_terms,
    hinge_terms,
    l2_penalty,
    logistic_pair_terms,
    logistic_terms,
)
from fairl.irl.ops import NumpyOps, TorchOps


def test_max_margin_loss_hand_computed():
    margins = torch.tensor([2.0, 0.5, -1.0, 1.0])
    # max(0, 1 - Δ): 0, 0.5, 2, 0 -> mean 0.625
    assert max_margin_loss(margins, M=1.0).item() == pytest.approx(0.625)
    # stricter margin M=2: 0, 1.5, 3, 1 -> mean 1.375
    assert max_margin_loss(margins, M=2.0).item() == pytest.approx(1.375)


def test_max_entropy_loss_hand_computed():
    margins = torch.tensor([0.0, 2.0, -1.0])
    expected = (math.log(2) + math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 3
    assert max_entropy_loss(margins, tau=1.0).item() == pytest.approx(expected, rel=1e-6)
    # temperature 0.5 doubles the effective margins
    expected_sharp = (math.log(2) + math.log(1 + math.exp(-4.0)) + math.log(1 + math.exp(2.0))) / 3
    assert max_entropy_loss(margins, tau=0.5).item() == pytest.approx(expected_sharp, rel=1e-6)


def test_max_entropy_is_stable_for_large_margins():
    margins = torch.tensor([-1e4, 1e4])
    assert max_entropy_loss(margins, tau=1.0).item() == pytest.approx(1e4 / 2)


def test_empty_sets_give_zero():
    empty = torch.zeros(0)
    assert max_margin_loss(empty, 1.0).item() == 0.0
    assert max_entropy_loss(empty, 1.0).item() == 0.0


def test_l2_penalty():
    assert l2_penalty(torch.tensor([3.0, 4.0]), alpha=0.1).item() == pytest.approx(2.5)


@pytest.mark.parametrize("ops", [NumpyOps, TorchOps], ids=["numpy", "torch"])
@pytest.mark.parametrize("weight", [1.0, 7.4, 0.3])
@pytest.mark.parametrize("loss,terms,constant", [
    (max_margin_loss, hinge_terms, 1.0), (max_margin_loss, hinge_terms, 2.0),
    (max_entropy_loss, logistic_terms, 1.0), (max_entropy_loss, logistic_terms, 0.5),
])
def test_hand_terms_are_the_loss_and_autograds_gradient(loss, terms, constant, weight, ops):
    margins = torch.randn(1001, generator=torch.Generator().manual_seed(0)) * 3
    margins[:3] = torch.tensor([constant, -40.0, 40.0])  # hinge corner, softplus threshold
    leaf = margins.clone().requires_grad_()
    value = loss(leaf, constant)
    (weight * value).backward()
    rows = margins[None].numpy() if ops is NumpyOps else margins[None]  # one head
    mean, grad = terms(rows, ops.tensor([[constant]], rows), weight / len(margins), ops)
    assert grad.dtype == rows.dtype and mean.dtype == rows.dtype  # float32 stays
    assert float(mean[0]) == pytest.approx(value.item(), rel=1e-6)
    np.testing.assert_allclose(np.asarray(grad[0]), leaf.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_hand_terms_take_one_constant_per_head():
    margins = np.array([[0.5, 2.0], [0.5, 2.0]], np.float32)
    M = np.array([[1.0], [3.0]], np.float32)
    mean, grad = hinge_terms(margins, M, 0.5, NumpyOps)
    assert mean.tolist() == [0.25, 1.75]  # (0.5 + 0) / 2, (2.5 + 1) / 2
    assert grad.tolist() == [[-0.5, 0.0], [-0.5, -0.5]]


@pytest.mark.parametrize("ops", [NumpyOps, TorchOps], ids=["numpy", "torch"])
@pytest.mark.parametrize("pair_terms,terms,constants", [
    (hinge_pair_terms, hinge_terms, (2.0, 3.5)), (logistic_pair_terms, logistic_terms, (0.5, 0.2)),
])
def test_pair_terms_are_each_heads_terms_side_by_side(pair_terms, terms, constants, ops):
    """Two heads' failure sets (3 and 5 pairs) in one pass, each pair with its head's constant
    and weight: each head's mean and gradient are those of its own terms."""
    margins = np.array([0.3, 2.5, -1.0, 4.0, 0.1, 3.4, -0.2, 1.9], np.float32)
    lengths, weights = [3, 5], [0.7, 0.05]
    each = (np.repeat(constants, lengths).astype(np.float32),
            np.repeat(weights, lengths).astype(np.float32))
    flat = margins if ops is NumpyOps else torch.from_numpy(margins)
    losses, grad = pair_terms(flat, *(ops.tensor(v, flat) for v in each), ops)
    sums = ops.segment_sums(losses, lengths)
    for h, (start, end) in enumerate([(0, 3), (3, 8)]):
        rows = flat[start:end][None]
        mean, own = terms(rows, ops.tensor([[constants[h]]], rows), weights[h], ops)
        assert sums[h] / lengths[h] == pytest.approx(float(mean[0]), rel=1e-6)
        np.testing.assert_allclose(np.asarray(grad[start:end]), np.asarray(own[0]), rtol=1e-6)
