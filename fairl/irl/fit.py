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

fa_irl_loss states L_t with autograd; fit() applies its exact gradient by hand (fa_irl_step):
per step one pass over D forward, Δ = D (θ_D + θ_F), one D^T g backward for θ_D, and θ_F's
failure gradient from the sampled rows alone. The one host read per step is |F_t|, which
sizes S_t; loss terms stay on the device until the end of the fit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from fairl.devices import resolve_device
from fairl.irl.config import FitConfig
from fairl.irl.failures import (
    bootstrap_ensemble_margins,
    ensemble_failures,
    failure_budget,
    ground_truth_failures,
    margin_failures,
    sample_failures,
)
from fairl.irl.losses import (
    l2_penalty,
    l2_penalty_grad,
    max_entropy_loss,
    max_entropy_loss_grad,
    max_margin_loss,
    max_margin_loss_grad,
)
from fairl.irl.optim import Optimiser
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


def objective_loss_grad(margins: torch.Tensor, config: FitConfig, strict: bool,
                        weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective_loss, ∂(weight · objective_loss)/∂Δ) in one go, as fa_irl_step applies them."""
    if config.objective == "max_margin":
        return max_margin_loss_grad(margins, config.M_fail if strict else config.M, weight)
    return max_entropy_loss_grad(margins, config.tau_fail if strict else config.tau, weight)


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
    fa_irl_step implements by hand (tests/irl/test_fit.py checks both give one gradient).
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


class FAIRLStep(NamedTuple):
    losses: torch.Tensor  # (3,) base, fail, l2; total = base + λ_t fail + l2 (see _history)
    margins: torch.Tensor  # (b,) Δ under the full R, before the step
    failure_mask: torch.Tensor  # (b,) bool, F_t within the batch
    n_failures: int  # |F_t|
    n_sampled: int  # |S_t|


@torch.no_grad()
def fa_irl_step(diffs: torch.Tensor, weights: torch.Tensor, config: FitConfig, *,
                gamma: float, lam: float, p: float, gt_margins: torch.Tensor | None,
                generator: torch.Generator) -> FAIRLStep:
    """fa_irl_loss for one batch, with ∂L_t/∂θ written into weights.grad (no autograd).

    Both heads see the same Δ (sg only routes gradients), so one forward serves both paths.
    Measured here: matrix-vector products, not a skinny (n, d) @ (d, 2) matmul (MKL's sgemm
    was 3-300x slower); the sampled rows (0.5 % of pairs on average in bench/fit.py) via
    index_select, 3-10x faster than D[S]; one (2, n) @ D GEMM for both gradients instead
    was 9-25 % slower than D^T g single-threaded.
    """
    margins = diffs.mv(weights.sum(0))  # Δ = D (θ_D + θ_F): the one forward pass, both heads
    failure_mask, n_failures, sampled = draw_failures(margins, config, gamma, lam, p,
                                                      gt_margins, generator)
    base, g_D = objective_loss_grad(margins, config, strict=False)  # base loss: θ_D only
    fail, l2 = margins.new_zeros(()), margins.new_zeros(())
    if len(sampled):
        fail_margins = margins[sampled]  # = sg(R_D) + R_F = R_D + sg(R_F) in value
        fail, g_S = objective_loss_grad(fail_margins, config, strict=True, weight=lam)
        if config.fail_grad_to_base or not config.dual_path:
            g_D.index_add_(0, sampled, g_S)
    torch.mv(diffs.t(), g_D, out=weights.grad[0])  # the one backward pass
    if config.dual_path:
        theta_F, grad_F = weights[1], weights.grad[1]
        l2 = l2_penalty(theta_F, config.l2_fail)
        l2_penalty_grad(theta_F, config.l2_fail, out=grad_F)
        if len(sampled):  # index_select: 3-10x faster than diffs[sampled]
            grad_F += diffs.index_select(0, sampled).t().mv(g_S)
    return FAIRLStep(torch.stack([base, fail, l2]), margins, failure_mask, n_failures,
                     len(sampled))


def init_heads(d: int, n_heads: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaiming-uniform weights (heads, d) and biases (heads,), U(±1/√d) as nn.Linear does."""
    bound = 1 / math.sqrt(d)
    weights = (torch.rand(n_heads, d, generator=generator) * 2 - 1) * bound
    biases = (torch.rand(n_heads, generator=generator) * 2 - 1) * bound
    return weights, biases


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


def difference_matrix(h_T, h_NT) -> torch.Tensor:
    """D = h_T - h_NT (n, d) float32, checked: shapes, at least one pair, finite.

    Read-only inputs (a loaded world's: fairl.pairs.Pairs.freeze) get their D built once and
    reused by every later fit of the process (the last few pairs kept, by identity), as a
    sweep's trials and seeds fit the same pairs: at 20 000 x 768, building and checking D is
    ~16 ms, 5 % of a 100-round fit. Writeable inputs get a new D every call.
    """
    key = (id(h_T), id(h_NT))
    hit = _DIFFS.get(key)
    if hit is not None and hit[0] is h_T and hit[1] is h_NT:
        return hit[2]
    h_T32 = np.asarray(h_T, dtype=np.float32)
    h_NT32 = np.asarray(h_NT, dtype=np.float32)
    if h_T32.ndim != 2 or h_T32.shape != h_NT32.shape:
        raise ValueError(f"h_T {h_T32.shape} and h_NT {h_NT32.shape} must both be (n, d)")
    if len(h_T32) == 0:
        raise ValueError("no pairs to fit")
    diffs = torch.from_numpy(h_T32 - h_NT32)
    # A NaN or inf in h_T or h_NT makes D, and so its sum, non-finite; a finite sum clears
    # both inputs in one read of D (3 ms at 20 000 x 768, vs 18 ms for isfinite on both).
    if not diffs.sum().isfinite() and not (np.isfinite(h_T32).all()
                                           and np.isfinite(h_NT32).all()):
        raise ValueError("embeddings contain NaN or inf")
    if all(isinstance(h, np.ndarray) and h.dtype == np.float32 and not h.flags.writeable
           for h in (h_T, h_NT)):
        if len(_DIFFS) >= _DIFFS_KEPT:
            del _DIFFS[next(iter(_DIFFS))]  # the oldest
        _DIFFS[key] = (h_T, h_NT, diffs)  # holding h_T and h_NT keeps their ids theirs
    return diffs


_DIFFS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, torch.Tensor]] = {}
_DIFFS_KEPT = 4  # a world's train split, and a few composed or imported ones


def _difference_matrix(h_T, h_NT, gt_T, gt_NT, config: FitConfig):
    """Checked inputs as D = h_T - h_NT (n, d) float32, and Δ* = r*(o_T) - r*(o_NT) or None."""
    diffs = difference_matrix(h_T, h_NT)
    n = len(diffs)
    gt_margins = None
    if config.failure_mode == "ground_truth":
        if gt_T is None or gt_NT is None:
            raise ValueError("failure_mode='ground_truth' needs gt_T and gt_NT (r* of both outputs)")
        gt_margins = np.asarray(gt_T, np.float32) - np.asarray(gt_NT, np.float32)
        if gt_margins.shape != (n,):
            raise ValueError(f"gt_T/gt_NT must have shape ({n},), got {gt_margins.shape}")
        gt_margins = torch.from_numpy(gt_margins)
    if config.failure_mode == "ensemble":
        gt_margins = ensemble_failure_mask(diffs, config)
    return diffs, gt_margins


def ensemble_failure_mask(diffs: torch.Tensor, config: FitConfig) -> torch.Tensor:
    """F of failure_mode ensemble: sign disagreement of config.ensemble_size bootstrap base
    heads (the configured objective, rounds and lr; their own generator, seeded by the fit)."""
    if config.objective == "max_margin":
        def pair_loss(m):
            return torch.relu(config.M - m)
    else:
        def pair_loss(m):
            return torch.nn.functional.softplus(-m / config.tau)
    generator = torch.Generator().manual_seed(config.seed)
    margins = bootstrap_ensemble_margins(diffs, pair_loss, config.ensemble_size, config.rounds,
                                         config.lr, generator)
    return ensemble_failures(margins)


@torch.no_grad()
def fit(h_T: np.ndarray, h_NT: np.ndarray, config: FitConfig,
        gt_T: np.ndarray | None = None, gt_NT: np.ndarray | None = None,
        monitor: Monitor | None = None) -> FitResult:
    """Fit reward heads so aligned outputs (h_T) score above base outputs (h_NT).

    Per-step loss terms and per-round margin statistics go into preallocated tensors and
    reach the host once, at the end; so does divergence: a NaN or inf loss is detected
    then, and FitDiverged names its first round (a diverged fit runs to the end first).
    `monitor`: called with the heads so far after every `monitor.every` rounds (not after
    the last); whatever it raises (a pruned trial, say) ends the fit.
    """
    # Over 60 lines on purpose: FA-IRL's whole loop (schedules, failures F_t, the sample S_t,
    # one step, the history) reads top to bottom here, as DESIGN.md and the paper state it.
    diffs, gt_margins = _difference_matrix(h_T, h_NT, gt_T, gt_NT, config)
    # auto: CUDA when available; other names were checked by FitConfig's validator.
    device = torch.device(resolve_device("auto") if config.device == "auto" else config.device)
    diffs = diffs.to(device)
    gt_margins = None if gt_margins is None else gt_margins.to(device)
    n, d = diffs.shape
    generator = torch.Generator().manual_seed(config.seed)
    weights, biases = init_heads(d, 2 if config.dual_path else 1, generator)
    weights = weights.to(device)
    weights.grad = torch.zeros_like(weights)  # fa_irl_step writes ∂L_t/∂θ here
    optimizer = Optimiser(config.optimizer, weights, config.lr)
    rounds = config.rounds
    schedule = [(gamma_schedule(t, rounds, config.gamma_start, config.gamma_end,
                                config.gamma_shape),
                 lambda_schedule(t, config.lambda0, config.lambda_decay, config.lambda_fixed,
                                 config.rounds if config.lambda_decay_scaled else None),
                 p_schedule(t, rounds, config.p0, config.p_end)) for t in range(rounds)]
    steps = 1 if config.batch_size is None else math.ceil(n / config.batch_size)
    losses = torch.zeros(rounds, steps, 3, device=device)  # base, fail, l2 per step
    stats = _MarginStats(rounds, n, device)  # mean, min, accuracy per round
    counts = np.zeros((rounds, 2), dtype=np.int64)  # |F_t|, |S_t| summed over the round
    failure_counts = torch.zeros(n, dtype=torch.int64, device=device)

    for t, (gamma, lam, p) in enumerate(schedule):
        for s, batch in enumerate(_batches(n, config.batch_size, generator, device)):
            step = fa_irl_step(diffs[batch], weights, config, gamma=gamma, lam=lam, p=p,
                               gt_margins=None if gt_margins is None else gt_margins[batch],
                               generator=generator)
            optimizer.step()
            losses[t, s] = step.losses
            counts[t] += step.n_failures, step.n_sampled
            if config.failure_mode != "none":
                failure_counts[batch] += step.failure_mask
            stats.add(t, s, step.margins)
        if monitor is not None and (t + 1) % monitor.every == 0 and t + 1 < rounds:
            monitor(t, _result(weights, biases, config, [], failure_counts))

    # L_t = base + λ_t fail + l2 in float32, as one step would have summed it
    lams = torch.tensor([lam for _, lam, _ in schedule], device=device)[:, None]
    totals = losses[..., 0] + lams * losses[..., 1] + losses[..., 2]
    losses = torch.cat([totals[..., None], losses], dim=2)
    history = _history(schedule, losses.tolist(), stats.result().tolist(), counts.tolist(), n,
                       config)
    return _result(weights, biases, config, history, failure_counts)


class Monitor(Protocol):
    """What fit() calls every `every` rounds with (round, the heads so far as a FitResult)."""

    every: int

    def __call__(self, t: int, result: FitResult) -> None: ...


def _result(weights, biases, config: FitConfig, history, failure_counts) -> FitResult:
    weights = weights.cpu().numpy()
    biases = biases.numpy()
    return FitResult(
        theta_D=weights[0].copy(),
        b_D=float(biases[0]),
        theta_F=weights[1].copy() if config.dual_path else None,
        b_F=float(biases[1]) if config.dual_path else 0.0,
        config=config,
        history=history,
        failure_counts=failure_counts.cpu().numpy().copy(),
    )


class _MarginStats:
    """Mean, min and accuracy (Δ > 0) of each round's margins, computed a block of rounds at
    a time: one copy per round instead of three reductions and a stack (~15 µs a round)."""

    BLOCK = 32

    def __init__(self, rounds: int, n: int, device):
        self.out = torch.zeros(rounds, 3, device=device)
        self.block = torch.empty(min(self.BLOCK, rounds), n, device=device)
        self.start, self.offset = 0, 0

    def add(self, t: int, step: int, margins: torch.Tensor) -> None:
        if step == 0:
            if t - self.start == len(self.block):
                self._flush(t)
            self.offset = 0
        self.block[t - self.start, self.offset:self.offset + len(margins)] = margins
        self.offset += len(margins)

    def _flush(self, t: int) -> None:
        block = self.block[:t - self.start]
        self.out[self.start:t] = torch.stack(
            [block.mean(1), block.amin(1), (block > 0).float().mean(1)], dim=1)
        self.start = t

    def result(self) -> torch.Tensor:
        self._flush(len(self.out))
        return self.out


def _history(schedule, losses, margin_stats, counts, n: int, config: FitConfig) -> list[dict]:
    """One record per round; raises FitDiverged at the first step whose loss is not finite."""
    sizes = [n] if config.batch_size is None else [min(config.batch_size, n - i)
                                                   for i in range(0, n, config.batch_size)]
    history = []
    for t, ((gamma, lam, p), step_losses, (mean, low, accuracy), (n_failures, n_sampled)) \
            in enumerate(zip(schedule, losses, margin_stats, counts)):
        record = {"round": t, "gamma": gamma, "lam": lam, "p": p, "loss": 0.0,
                  "loss_base": 0.0, "loss_fail": 0.0, "loss_l2": 0.0, "n_failures": n_failures,
                  "n_sampled": n_sampled}
        for (total, base, fail, l2), size in zip(step_losses, sizes):
            if not math.isfinite(total):
                raise FitDiverged(
                    f"loss is {total} at round {t} (base={base:.4g}, fail={fail:.4g}, "
                    f"l2={l2:.4g}); try a smaller lr (now {config.lr})")
            share = size / n  # the batch's share of the round's pairs
            record["loss"] += total * share
            record["loss_base"] += base * share
            record["loss_fail"] += fail * share
            record["loss_l2"] += l2 * share
        record.update(margin_mean=mean, margin_min=low, train_pairwise_accuracy=accuracy)
        history.append(record)
    return history


def _batches(n: int, batch_size: int | None, generator: torch.Generator, device):
    """Full batch (a slice: views, no copies) or a seeded shuffle into minibatches."""
    if batch_size is None or batch_size >= n:
        yield slice(None)
        return
    order = torch.randperm(n, generator=generator).to(device)
    yield from order.split(batch_size)
