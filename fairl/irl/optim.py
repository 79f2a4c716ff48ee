"""The fit's optimisers written out: torch.optim's single-tensor Adam, AdamW and SGD, bit for bit.

Why not torch.optim itself: its `step()` cost ~90 µs per round on the fit's (heads, d) weight
tensor (hooks, per-group defaults, state lookups, a tensor step counter read back to the
host), about 15 % of a round at the default world's 9 243 x 384. These are the same tensor
ops in the same order as torch's `_single_tensor_adam` / `_single_tensor_sgd` (what
torch.optim runs on CPU tensors), ~25 µs. tests/irl/test_optim.py checks torch.equal against
torch.optim over many steps.
"""

from __future__ import annotations

import torch

BETAS = (0.9, 0.999)  # torch.optim.Adam / AdamW defaults
EPS = 1e-8
ADAMW_WEIGHT_DECAY = 1e-2  # torch.optim.AdamW default


class Optimiser:
    """`step()` updates `param` from `param.grad` in place, as torch.optim.<name> would."""

    def __init__(self, name: str, param: torch.Tensor, lr: float):
        if name not in ("adam", "adamw", "sgd"):
            raise ValueError(f"unknown optimizer {name!r}")
        self.name, self.param, self.lr = name, param, float(lr)
        self.steps = 0
        if name != "sgd":
            self.exp_avg = torch.zeros_like(param)
            self.exp_avg_sq = torch.zeros_like(param)

    @torch.no_grad()
    def step(self) -> None:
        param, grad, lr = self.param, self.param.grad, self.lr
        if self.name == "sgd":
            param.add_(grad, alpha=-lr)
            return
        self.steps += 1
        if self.name == "adamw":
            param.mul_(1 - lr * ADAMW_WEIGHT_DECAY)
        beta1, beta2 = BETAS
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(self.steps)  # torch reads its float step tensor back: the same float
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(EPS)
        param.addcdiv_(self.exp_avg, denom, value=-step_size)
