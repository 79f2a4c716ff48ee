"""FA-IRL (Algorithm 1 of arXiv 2510.06092) and standard IRL, as one short loop.

Reward heads are linear in the frozen embedding h(o):
    R_D(o) = θ_D·h(o) + b_D,   R_F(o) = θ_F·h(o) + b_F,   R = R_D + R_F.
Every loss depends on pair margins Δ_i = R(o_T,i) - R(o_NT,i) = θ·(h_T,i - h_NT,i), so the
biases cancel (they keep their Kaiming-uniform init) and the fit runs on the difference
matrix, built once: per step one matrix-vector product per head forward, one backward for
θ_D, and for θ_F a backward over the sampled failure rows only. (Matrix-vector, not a skinny
(n, d) @ (d, 2) matmul: MKL's sgemm for that shape was 3-300x slower here, worst when the
other core is busy.)

Round t:  γ_t, λ_t, p_t from the schedules
          F_t = failures of the current R (margin: Δ < γ_t; ground truth: r* agrees, R doesn't)
          S_t = ceil(p_t |F_t|) failures drawn from F_t (random, seeded)
          L_t = L_base(R_D + sg(R_F); M, τ) + λ_t L_fail(S_t; sg(R_D) + R_F; M_fail, τ_fail)
                + α‖θ_F‖²
Gradient routing: θ_D learns from every pair through the base loss; θ_F only from the
failure loss and its L2 penalty (fail_grad_to_base=True lets the failure loss move θ_D too;
without the failure head it always does). Standard IRL: failure_mode="none", dual_path=False.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fairl.irl.config import FitConfig
from fairl.irl.failures import (
    failure_budget,
    ground_truth_failures,
    margin_failures,
    sample_failures,
)
from fairl.irl.losses import l2_penalty, max_entropy_loss, max_margin_loss
from fairl.irl.schedules import gamma_schedule, lambda_schedule, p_schedule


class FitDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which round and which term."""


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
    return torch.zeros_like(margins, dtype=torch.bool)


def fa_irl_loss(diffs: torch.Tensor, weights: torch.Tensor, config: FitConfig, *,
                gamma: float, lam: float, p: float, gt_margins: torch.Tensor | None,
                generator: torch.Generator) -> FAIRLLoss:
    """L_t = L_base + λ_t L_fail(S_t) + α‖θ_F‖² for one batch.

    diffs: (b, d) rows h_T - h_NT; weights: (heads, d) = [θ_D] or [θ_D, θ_F].
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
    failure_mask = find_failures(margins, config, gamma, gt_margins)
    k = failure_budget(int(failure_mask.sum()), len(margins), p, config.failure_budget)
    if k > 0 and lam > 0:
        sampled = sample_failures(failure_mask, margins, k, config.failure_sampling, generator)
        # The failure loss sees R = R_D + R_F; by default only θ_F (the correction head) learns
        # from it. Its gradient needs only the sampled rows, not a pass over all of diffs.
        fail_D = margin_D[sampled]
        if config.dual_path:
            if not config.fail_grad_to_base:
                fail_D = fail_D.detach()
            fail_margins = fail_D + diffs[sampled].mv(theta_F)
        else:
            fail_margins = fail_D
        fail = objective_loss(fail_margins, config, strict=True)
    else:
        sampled = torch.zeros(0, dtype=torch.long, device=margins.device)
        fail = margins.new_zeros(())
    return FAIRLLoss(base + lam * fail + l2, base, fail, l2, margins, failure_mask, sampled)


def init_heads(d: int, n_heads: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaiming-uniform weights (heads, d) and biases (heads,), U(±1/√d) as nn.Linear does."""
    bound = 1 / math.sqrt(d)
    weights = (torch.rand(n_heads, d, generator=generator) * 2 - 1) * bound
    biases = (torch.rand(n_heads, generator=generator) * 2 - 1) * bound
    return weights, biases


def make_optimizer(config: FitConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr)


@dataclasses.dataclass
class FitResult:
    """Fitted reward heads, the config, per-round history, and failure counts per pair."""

    theta_D: np.ndarray  # (d,)
    b_D: float
    theta_F: np.ndarray | None  # (d,) or None without the failure path
    b_F: float
    config: FitConfig
    history: list[dict]  # one record per round
    failure_counts: np.ndarray  # (n,) rounds each training pair spent in F_t

    def reward_D(self, h: np.ndarray) -> np.ndarray:
        """Base path R_D(o) for embeddings h (m, d)."""
        return np.asarray(h, dtype=np.float32) @ self.theta_D + np.float32(self.b_D)

    def reward_F(self, h: np.ndarray) -> np.ndarray:
        """Failure path R_F(o); zeros when the fit had no failure head."""
        h = np.asarray(h, dtype=np.float32)
        if self.theta_F is None:
            return np.zeros(len(h), dtype=np.float32)
        return h @ self.theta_F + np.float32(self.b_F)

    def reward(self, h: np.ndarray) -> np.ndarray:
        """R(o) = R_D(o) + R_F(o)."""
        return self.reward_D(h) + self.reward_F(h)

    def heads(self) -> dict[str, np.ndarray]:
        """The heads as arrays: the one layout of every heads file (save, rewards.npz)."""
        return {"theta_D": np.asarray(self.theta_D, np.float32),
                "theta_F": np.asarray(self.theta_F if self.theta_F is not None else [],
                                      np.float32),
                "biases": np.array([self.b_D, self.b_F], dtype=np.float32)}

    @classmethod
    def from_heads(cls, arrays, config: FitConfig, prefix: str = "",
                   history: list[dict] | None = None,
                   failure_counts: np.ndarray | None = None) -> FitResult:
        """Read heads written by `heads()` (keys under `prefix`, e.g. "seed0/" in rewards.npz)."""
        theta_F = np.asarray(arrays[f"{prefix}theta_F"])
        biases = np.asarray(arrays[f"{prefix}biases"])
        return cls(theta_D=np.asarray(arrays[f"{prefix}theta_D"]), b_D=float(biases[0]),
                   theta_F=theta_F if theta_F.size else None, b_F=float(biases[1]),
                   config=config, history=history or [],
                   failure_counts=np.zeros(0) if failure_counts is None else failure_counts)

    def save(self, path: str | Path) -> Path:
        """Write heads, config, history and failure counts to one .npz file."""
        path = Path(path)
        np.savez(path, **self.heads(), failure_counts=self.failure_counts,
                 config=json.dumps(dataclasses.asdict(self.config)),
                 history=json.dumps(self.history))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FitResult:
        with np.load(path) as data:
            return cls.from_heads(data, FitConfig(**json.loads(str(data["config"]))),
                                  history=json.loads(str(data["history"])),
                                  failure_counts=data["failure_counts"])


def _check_inputs(h_T, h_NT, gt_T, gt_NT, config: FitConfig):
    h_T = np.asarray(h_T, dtype=np.float32)
    h_NT = np.asarray(h_NT, dtype=np.float32)
    if h_T.ndim != 2 or h_T.shape != h_NT.shape:
        raise ValueError(f"h_T {h_T.shape} and h_NT {h_NT.shape} must both be (n, d)")
    if len(h_T) == 0:
        raise ValueError("no pairs to fit")
    if not (np.isfinite(h_T).all() and np.isfinite(h_NT).all()):
        raise ValueError("embeddings contain NaN or inf")
    gt_margins = None
    if config.failure_mode == "ground_truth":
        if gt_T is None or gt_NT is None:
            raise ValueError("failure_mode='ground_truth' needs gt_T and gt_NT (r* of both outputs)")
        gt_margins = np.asarray(gt_T, np.float32) - np.asarray(gt_NT, np.float32)
        if gt_margins.shape != (len(h_T),):
            raise ValueError(f"gt_T/gt_NT must have shape ({len(h_T)},), got {gt_margins.shape}")
    return h_T, h_NT, gt_margins


def fit(h_T: np.ndarray, h_NT: np.ndarray, config: FitConfig,
        gt_T: np.ndarray | None = None, gt_NT: np.ndarray | None = None) -> FitResult:
    """Fit reward heads so aligned outputs (h_T) score above base outputs (h_NT)."""
    h_T, h_NT, gt_margins = _check_inputs(h_T, h_NT, gt_T, gt_NT, config)
    device = torch.device(config.device)
    diffs = torch.from_numpy(h_T - h_NT).to(device)  # (n, d)
    gt_margins = None if gt_margins is None else torch.from_numpy(gt_margins).to(device)
    n, d = diffs.shape
    generator = torch.Generator().manual_seed(config.seed)
    weights, biases = init_heads(d, 2 if config.dual_path else 1, generator)
    weights = weights.to(device).requires_grad_()
    optimizer = make_optimizer(config, [weights])
    failure_counts = torch.zeros(n, dtype=torch.int64, device=device)
    history = []

    for t in range(config.rounds):
        gamma = gamma_schedule(t, config.rounds, config.gamma_start, config.gamma_end,
                               config.gamma_shape)
        lam = lambda_schedule(t, config.lambda0, config.lambda_decay, config.lambda_fixed)
        p = p_schedule(t, config.rounds, config.p0, config.p_end)
        record = {"round": t, "gamma": gamma, "lam": lam, "p": p, "loss": 0.0,
                  "loss_base": 0.0, "loss_fail": 0.0, "loss_l2": 0.0, "n_failures": 0,
                  "n_sampled": 0}
        round_margins = []
        for batch in _batches(n, config.batch_size, generator, device):
            terms = fa_irl_loss(diffs[batch], weights, config, gamma=gamma, lam=lam, p=p,
                                gt_margins=None if gt_margins is None else gt_margins[batch],
                                generator=generator)
            if not torch.isfinite(terms.total):
                raise FitDiverged(
                    f"loss is {terms.total.item()} at round {t} (base={terms.base.item():.4g}, "
                    f"fail={terms.fail.item():.4g}, l2={terms.l2.item():.4g}); "
                    f"try a smaller lr (now {config.lr})")
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            share = len(terms.margins) / n
            record["loss"] += terms.total.item() * share
            record["loss_base"] += terms.base.item() * share
            record["loss_fail"] += terms.fail.item() * share
            record["loss_l2"] += terms.l2.item() * share
            record["n_failures"] += int(terms.failure_mask.sum())
            record["n_sampled"] += len(terms.sampled)
            failure_counts[batch] += terms.failure_mask
            round_margins.append(terms.margins)
        margins = torch.cat(round_margins)
        record.update(margin_mean=margins.mean().item(), margin_min=margins.min().item(),
                      train_pairwise_accuracy=(margins > 0).float().mean().item())
        history.append(record)

    weights = weights.detach().cpu().numpy()
    biases = biases.numpy()
    return FitResult(
        theta_D=weights[0].copy(),
        b_D=float(biases[0]),
        theta_F=weights[1].copy() if config.dual_path else None,
        b_F=float(biases[1]) if config.dual_path else 0.0,
        config=config,
        history=history,
        failure_counts=failure_counts.cpu().numpy(),
    )


def _batches(n: int, batch_size: int | None, generator: torch.Generator, device):
    """Full batch (a slice: views, no copies) or a seeded shuffle into minibatches."""
    if batch_size is None or batch_size >= n:
        yield slice(None)
        return
    order = torch.randperm(n, generator=generator).to(device)
    yield from order.split(batch_size)
