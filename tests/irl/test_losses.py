import math

import pytest
import torch

from fairl.irl import max_entropy_loss, max_margin_loss
from fairl.irl.losses import (
    l2_penalty,
    l2_penalty_grad,
    max_entropy_grad,
    max_entropy_loss_grad,
    max_margin_grad,
    max_margin_loss_grad,
)


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


@pytest.mark.parametrize("weight", [1.0, 7.4, 0.3])
@pytest.mark.parametrize("loss,grad,constant", [
    (max_margin_loss, max_margin_grad, 1.0), (max_margin_loss, max_margin_grad, 2.0),
    (max_entropy_loss, max_entropy_grad, 1.0), (max_entropy_loss, max_entropy_grad, 0.5),
])
def test_hand_gradients_are_autograds_bits(loss, grad, constant, weight):
    margins = torch.randn(1001, generator=torch.Generator().manual_seed(0)) * 3
    margins[:3] = torch.tensor([constant, -40.0, 40.0])  # hinge corner, softplus threshold
    leaf = margins.clone().requires_grad_()
    (weight * loss(leaf, constant)).backward()
    assert torch.equal(grad(margins, constant, weight), leaf.grad)
    theta = margins[:10].clone().requires_grad_()
    l2_penalty(theta, 0.01).backward()
    assert torch.equal(l2_penalty_grad(margins[:10], 0.01), theta.grad)


@pytest.mark.parametrize("weight", [1.0, 7.4])
@pytest.mark.parametrize("loss,grad,both,constant", [
    (max_margin_loss, max_margin_grad, max_margin_loss_grad, 1.5),
    (max_entropy_loss, max_entropy_grad, max_entropy_loss_grad, 0.5),
])
def test_loss_grad_pairs_are_the_separate_functions_bits(loss, grad, both, constant, weight):
    margins = torch.randn(1001, generator=torch.Generator().manual_seed(3)) * 3
    value, gradient = both(margins, constant, weight)
    assert torch.equal(value, loss(margins, constant))
    assert torch.equal(gradient, grad(margins, constant, weight))
    empty_value, empty_grad = both(torch.zeros(0), constant, weight)
    assert empty_value.item() == 0.0 and empty_grad.numel() == 0
