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


def hinge_terms(margins, M, scale, ops):
    """(max(0, M - Δ), scale · ∂max(0, M - Δ)/∂Δ) per pair; M and scale broadcast (per head).

    `scale` is ∂(w · mean)/∂loss_i = w / |set|: the gradient of w · max_margin_loss."""
    hinge = ops.relu_(M - margins)
    # sign(relu(·)) is the 1/0 indicator of an active hinge (relu's own backward test)
    return hinge, ops.sign(hinge) * -scale


def logistic_terms(margins, tau, scale, ops):
    """(softplus(-Δ/τ), scale · ∂softplus(-Δ/τ)/∂Δ = -scale σ(-Δ/τ)/τ) per pair (max-entropy)."""
    x = margins * (-1 / tau)
    return ops.softplus(x), ops.sigmoid(x) * (-scale / tau)
