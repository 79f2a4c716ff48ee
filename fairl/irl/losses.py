"""IRL objectives on pair margins Δ_i = R(o_T,i) - R(o_NT,i), named after the paper."""

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
