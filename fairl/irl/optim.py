"""The fit's optimisers for many heads at once: torch.optim's Adam, AdamW and SGD, written out.

Why not torch.optim itself: its `step()` cost ~90 µs per round on the fit's small weight
tensor (hooks, per-group defaults, state lookups), about 15 % of a round at the default
world's 9 243 x 384, and it takes one learning rate per tensor. `Optimiser` updates a
(heads, ...) array of numpy or torch (fairl.irl.batch's `ops`) in place, each head (row)
with its own optimiser and learning rate, by torch's single-tensor formulas (defaults:
betas, eps, AdamW's weight decay); tests/irl/test_optim.py checks it against torch.optim.
"""

from __future__ import annotations

BETAS = (0.9, 0.999)  # torch.optim.Adam / AdamW defaults
EPS = 1e-8
ADAMW_WEIGHT_DECAY = 1e-2  # torch.optim.AdamW default
NAMES = ("adam", "adamw", "sgd")


class Optimiser:
    """`step(param, grad)` updates `param` (heads, ...) in place; row h by `names[h]`, `lrs[h]`."""

    def __init__(self, names: list[str], lrs: list[float], like, ops):
        unknown = sorted(set(names) - set(NAMES))
        if unknown:
            raise ValueError(f"unknown optimizer {unknown[0]!r}")
        self.ops, self.names, self.steps = ops, list(names), 0
        shape = (len(names),) + (1,) * (like.ndim - 1)  # broadcasts over a head's entries
        self.lr = ops.tensor(lrs, like).reshape(shape)
        self.sgd = self._rows("sgd", shape, like)
        self.adamw = self._rows("adamw", shape, like)
        self.exp_avg = ops.zeros_like(like)
        self.exp_avg_sq = ops.zeros_like(like)

    def _rows(self, name: str, shape, like):
        """True (all rows), False (none) or a bool row mask of the heads using `name`."""
        flags = [n == name for n in self.names]
        return all(flags) or (any(flags) and self.ops.tensor(flags, like, bool).reshape(shape))

    def keep(self, rows) -> None:
        """Drop the heads not in `rows` (an index array of the rows that stay)."""
        self.names = [self.names[int(i)] for i in rows]
        for name in ("lr", "exp_avg", "exp_avg_sq"):
            setattr(self, name, getattr(self, name)[rows])
        for name in ("sgd", "adamw"):
            flags = getattr(self, name)
            if not isinstance(flags, bool):
                flags = flags[rows]
                flags = bool(flags.all()) or (bool(flags.any()) and flags)
            setattr(self, name, flags)

    def step(self, param, grad) -> None:
        ops, lr = self.ops, self.lr
        if self.sgd is True:
            param -= lr * grad
            return
        self.steps += 1
        if self.adamw is True:  # decoupled weight decay, before the moments (torch)
            param *= 1 - lr * ADAMW_WEIGHT_DECAY
        elif self.adamw is not False:
            param *= ops.where(self.adamw, 1 - lr * ADAMW_WEIGHT_DECAY, 1.0)
        beta1, beta2 = BETAS
        self.exp_avg += (grad - self.exp_avg) * (1 - beta1)  # lerp(exp_avg, grad, 1 - β1)
        self.exp_avg_sq *= beta2
        self.exp_avg_sq += grad * grad * (1 - beta2)
        step_size = lr / (1 - beta1 ** self.steps)
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        denom = ops.sqrt(self.exp_avg_sq) / bias_correction2_sqrt + EPS
        update = self.exp_avg / denom * step_size
        if self.sgd is not False:  # rows on SGD: their own update, their moments unused
            update = ops.where(self.sgd, lr * grad, update)
        param -= update
