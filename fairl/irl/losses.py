"""IRL objectives on pair margins Δ_i = R(o_T,i) - R(o_NT,i), named after the paper.

The torch functions state the losses (fairl.irl.fit.fa_irl_loss differentiates them with
autograd); `hinge_terms` and `logistic_terms` are what the fit applies: each pair's loss and
its gradient ∂/∂Δ in one go, on numpy arrays or torch tensors (fairl.irl.batch's `ops`),
for many heads at once (per-row constants). tests/irl/test_fit.py checks a whole step's
gradient against autograd's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def max_margin_loss(margins: torch.Tensor, M: float) -> torch.Tensor:
    """Max-margin IRL: mean_i max(0, M - Δ_i). Empty set → 0."""
    if margins.numel() == 0:
        return margins.new_zeros(())
    return F.relu(M - margins).mean()


def max_entropy_loss(margins: torch.Tensor, tau: float) -> torch.Tensor:
    """Max-entropy IRL (Bradley-Terry with temperature): mean_i -log σ(Δ_i / τ). Empty set → 0."""
    if margins.numel() == 0:
        return margins.new_zeros(())
    return F.softplus(-margins / tau).mean()  # softplus(-x) = -log σ(x), stable for large |x|


def l2_penalty(theta: torch.Tensor, alpha: float) -> torch.Tensor:
    """α‖θ‖², the regulariser that keeps the failure head from overfitting few pairs."""
    return alpha * theta.square().sum()


def hinge_terms(margins, M, scale: float, ops):
    """Per head (row of margins (H, b); M (H, 1)): the mean of max(0, M - Δ_i) (H,), and
    scale · ∂max(0, M - Δ_i)/∂Δ_i (H, b); scale = w / b makes it the gradient of w · mean.

    The mean from the active set A, (M |A| - Σ_A Δ) / b: four passes over Δ instead of six."""
    grad = (margins < M) * ops.tensor(-scale, margins)  # -scale where the hinge is active
    total = (ops.vecdot(grad, margins) - grad.sum(1) * M[:, 0]) / scale  # Σ_A (M - Δ)
    return total / margins.shape[1], grad


def logistic_terms(margins, tau, scale: float, ops):
    """Per head: the mean of softplus(-Δ_i/τ) = -log σ(Δ_i/τ) (max-entropy; tau (H, 1)), and
    scale · ∂/∂Δ_i = -scale σ(-Δ_i/τ)/τ; softplus(x) = max(x, 0) + log(1 + e^-|x|)."""
    softplus, grad = logistic_pair_terms(margins, tau, scale, ops)
    return softplus.mean(1), grad


def hinge_pair_terms(margins, M, weight, ops):
    """Per pair (1-D margins, each pair's own M and weight w): max(0, M - Δ_i) and
    w · ∂max(0, M - Δ_i)/∂Δ_i; many heads' failure sets side by side in one pass."""
    active = margins < M
    return ops.relu_(M - margins), active * -weight


def logistic_pair_terms(margins, tau, weight, ops):
    """Per pair: softplus(-Δ_i/τ) and w · ∂/∂Δ_i = -w σ(-Δ_i/τ)/τ (τ and w broadcast against
    the margins: per pair, per row (H, 1), or one number)."""
    x = margins * (-1 / tau)
    sigmoid = 1 / (1 + ops.exp(-x))  # e^-x = inf gives 0, not NaN
    softplus = ops.log(1 + ops.exp(-abs(x)))
    softplus += ops.relu_(x)
    return softplus, sigmoid * (-weight / tau)
