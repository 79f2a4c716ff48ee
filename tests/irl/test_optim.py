"""fairl.irl.optim against torch.optim: the same bits, step after step."""

import pytest
import torch

from fairl.irl.optim import Optimiser

TORCH = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


@pytest.mark.parametrize("name", list(TORCH))
def test_optimiser_matches_torch_bit_for_bit(name):
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(2, 64, generator=generator)
    ours, theirs = start.clone(), start.clone().requires_grad_(True)
    ours.grad = torch.zeros_like(ours)
    optimiser, reference = Optimiser(name, ours, 0.03), TORCH[name]([theirs], lr=0.03)
    for _ in range(200):
        grad = torch.randn(2, 64, generator=generator) * torch.rand(1, generator=generator)
        ours.grad.copy_(grad)
        theirs.grad = grad.clone()
        optimiser.step()
        reference.step()
        assert torch.equal(ours, theirs.detach())


def test_optimiser_moves_against_the_gradient():
    param = torch.ones(3)
    param.grad = torch.tensor([1.0, -1.0, 0.0])
    Optimiser("adam", param, 0.1).step()
    assert param[0] < 1 < param[1] and param[2] == 1


def test_unknown_optimiser_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer"):
        Optimiser("lbfgs", torch.zeros(2), 0.1)
