"""fairl.irl.optim against torch.optim: step after step, each head (row) by its own optimiser."""

import numpy as np
import pytest
import torch

from fairl.irl.ops import NumpyOps, TorchOps
from fairl.irl.optim import Optimiser

TORCH = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


@pytest.mark.parametrize("ops", [NumpyOps, TorchOps], ids=["numpy", "torch"])
@pytest.mark.parametrize("names", [["adam"] * 3, ["adamw"] * 3, ["sgd"] * 3,
                                   ["adam", "sgd", "adamw"]], ids="-".join)
def test_optimiser_matches_torch_per_head(names, ops):
    generator = torch.Generator().manual_seed(0)
    lrs = [0.03, 0.1, 0.01]
    start = torch.randn(3, 2, 64, generator=generator)
    ours = start.clone().numpy() if ops is NumpyOps else start.clone()
    theirs = [start[h].clone().requires_grad_(True) for h in range(3)]
    optimiser = Optimiser(names, lrs, ours, ops)
    references = [TORCH[name]([theirs[h]], lr=lrs[h]) for h, name in enumerate(names)]
    for _ in range(200):
        grad = torch.randn(3, 2, 64, generator=generator) * torch.rand(1, generator=generator)
        optimiser.step(ours, grad.numpy() if ops is NumpyOps else grad)
        for h, reference in enumerate(references):
            theirs[h].grad = grad[h].clone()
            reference.step()
    for h in range(3):
        np.testing.assert_allclose(np.asarray(ours[h]), theirs[h].detach().numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_a_head_left_out_keeps_the_others_state():
    param = np.ones((2, 3), np.float32)
    optimiser = Optimiser(["adam", "sgd"], [0.1, 0.5], param, NumpyOps)
    grad = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    optimiser.step(param, grad)
    assert param[0, 0] < 1 < param[0, 1] and param[0, 2] == 1
    assert np.allclose(param[1], 0.5)
    optimiser.keep(np.array([1]))
    param = param[[1]]
    optimiser.step(param, grad[[1]])
    assert optimiser.sgd is True and np.allclose(param, 0.0)


def test_unknown_optimiser_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer"):
        Optimiser(["lbfgs"], [0.1], np.zeros((1, 2), np.float32), NumpyOps)
