"""FA-IRL (Algorithm 1 of arXiv 2510.06092) and standard IRL, as one short loop.

Reward heads are linear in the frozen embedding h(o):
    R_D(o) = θ_D·h(o) + b_D,   R_F(o) = θ_F·h(o) + b_F,   R = R_D + R_F.
Every loss depends on pair margins Δ_i = R(o_T,i) - R(o_NT,i) = θ·(h_T,i - h_NT,i), so the
biases cancel (they keep their Kaiming-uniform init) and the fit runs on the difference
matrix D, built once.

Round t:  γ_t, λ_t, p_t from the schedules
          F_t = failures of the current R (margin: Δ < γ_t; ground truth: r* agrees, R doesn't;
                ensemble: a fixed set, where bootstrap base heads disagree in sign)
          S_t = ceil(p_t |F_t|) failures drawn from F_t (random, seeded)
          L_t = L_base(R_D + sg(R_F); M, τ) + λ_t L_fail(S_t; sg(R_D) + R_F; M_fail, τ_fail)
                + α‖θ_F‖²
Gradient routing: θ_D learns from every pair through the base loss; θ_F only from the
failure loss and its L2 penalty (fail_grad_to_base=True lets the failure loss move θ_D too;
without the failure head it always does). Standard IRL: failure_mode="none", dual_path=False.

fa_irl_loss states L_t with autograd (the definition); fit() applies its exact gradient by
hand, in fairl.irl.batch's engine (the K = 1 case of fit_many, which fits many heads in one
pass): per step one product over D forward, Δ = D (θ_D + θ_F), one D^T g backward for θ_D,
and θ_F's failure gradient from the sampled rows alone; numpy (OpenBLAS) on the CPU, torch
on a GPU. The one host read per step is |F_t|, which sizes S_t.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from fairl.irl.batch import fit_many
from fairl.irl.config import FitConfig
from fairl.irl.failures import (
    failure_budget,
    ground_truth_failures,
    margin_failures,
    sample_failures,
)
from fairl.irl.losses import l2_penalty, max_entropy_loss, max_margin_loss
from fairl.irl.result import FitDiverged, FitResult, Monitor, difference_matrix, init_heads

__all__ = ["FitDiverged", "FitResult", "Monitor", "difference_matrix", "fa_irl_loss", "fit",
           "fit_many", "init_heads"]


class FAIRLLoss(NamedTuple):
    total: torch.Tensor
    base: torch.Tensor
    fail: torch.Tensor
    l2: torch.Tensor
    margins: torch.Tensor  # (b,) Δ under the full R at this step (detached)
    failure_mask: torch.Tensor  # (b,) bool, F_t within the batch
    sampled: torch.Tensor  # (|S_t|,) indices into the batch


def objective_loss(margins: torch.Tensor, config: FitConfig, strict: bool) -> torch.Tensor:
    """The configured objective; `strict` uses the failure constants M_fail / τ_fail."""
    if config.objective == "max_margin":
        return max_margin_loss(margins, config.M_fail if strict else config.M)
    return max_entropy_loss(margins, config.tau_fail if strict else config.tau)


def find_failures(margins: torch.Tensor, config: FitConfig, gamma: float,
                  gt_margins: torch.Tensor | None) -> torch.Tensor:
    """F_t as a bool mask over the pairs, by the configured failure mode."""
    if config.failure_mode == "margin":
        return margin_failures(margins, gamma)
    if config.failure_mode == "ground_truth":
        return ground_truth_failures(margins, gt_margins, gamma)
    if config.failure_mode == "ensemble":  # gt_margins carries the ensemble's static mask here
        return gt_margins
    return torch.zeros_like(margins, dtype=torch.bool)


def draw_failures(margins: torch.Tensor, config: FitConfig, gamma: float, lam: float, p: float,
                  gt_margins: torch.Tensor | None, generator: torch.Generator):
    """F_t (bool mask), its size |F_t| (read to the host: it sizes S_t), and S_t (indices)."""
    failure_mask = find_failures(margins, config, gamma, gt_margins)
    n_failures = int(failure_mask.sum()) if config.failure_mode != "none" else 0
    k = failure_budget(n_failures, len(margins), p, config.failure_budget)
    if k > 0 and lam > 0:
        sampled = sample_failures(failure_mask, margins, k, config.failure_sampling, generator)
    else:
        sampled = torch.zeros(0, dtype=torch.long, device=margins.device)
    return failure_mask, n_failures, sampled


def fa_irl_loss(diffs: torch.Tensor, weights: torch.Tensor, config: FitConfig, *,
                gamma: float, lam: float, p: float, gt_margins: torch.Tensor | None,
                generator: torch.Generator) -> FAIRLLoss:
    """L_t = L_base + λ_t L_fail(S_t) + α‖θ_F‖² for one batch, differentiable by autograd.

    diffs: (b, d) rows h_T - h_NT; weights: (heads, d) = [θ_D] or [θ_D, θ_F]. The definition
    fairl.irl.batch applies by hand (tests/irl/test_fit.py checks both give one gradient).
    """
    margin_D = diffs.mv(weights[0])  # (b,)
    if config.dual_path:
        theta_F = weights[1]
        margin_F = diffs.mv(theta_F.detach())  # θ_F gets no gradient from the base loss
        margins = margin_D + margin_F
        l2 = l2_penalty(theta_F, config.l2_fail)
    else:
        margins = margin_D
        l2 = margin_D.new_zeros(())
    base = objective_loss(margins, config, strict=False)
    margins = margins.detach()
    failure_mask, _, sampled = draw_failures(margins, config, gamma, lam, p, gt_margins,
                                             generator)
    fail = margins.new_zeros(())
    if len(sampled):
        # The failure loss sees R = R_D + R_F; by default only θ_F (the correction head) learns.
        fail_D = margin_D[sampled]
        if config.dual_path:
            if not config.fail_grad_to_base:
                fail_D = fail_D.detach()
            fail_margins = fail_D + diffs[sampled].mv(theta_F)
        else:
            fail_margins = fail_D
        fail = objective_loss(fail_margins, config, strict=True)
    return FAIRLLoss(base + lam * fail + l2, base, fail, l2, margins, failure_mask, sampled)


def fit(h_T: np.ndarray, h_NT: np.ndarray, config: FitConfig,
        gt_T: np.ndarray | None = None, gt_NT: np.ndarray | None = None,
        monitor: Monitor | None = None) -> FitResult:
    """Fit reward heads so aligned outputs (h_T) score above base outputs (h_NT).

    A NaN or inf loss ends the fit with FitDiverged naming its round and terms. `monitor`:
    called with the heads so far after every `monitor.every` rounds (not after the last);
    whatever it raises (a pruned trial, say) ends the fit. Many fits: fit_many.
    """
    (outcome,) = fit_many(h_T, h_NT, [config], gt_T, gt_NT, [monitor])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
