"""Failure finders (which pairs R gets wrong or nearly wrong) and the sampled set S_t."""

from __future__ import annotations

import math

import torch

from fairl.irl.config import FitConfig


def margin_failures(margins: torch.Tensor, gamma: float) -> torch.Tensor:
    """Self-supervised failures: F_t = {i : Δ_i < γ_t}. Returns a bool mask."""
    return margins < gamma


def ground_truth_failures(margins: torch.Tensor, gt_margins: torch.Tensor, gamma: float) -> torch.Tensor:
    """Supervised failures: r* orders pair i as labelled (Δ*_i > 0) but R does not clear γ_t.

    Pairs r* orders the other way are never failures: pushing them harder toward the label
    would fight the ground truth.
    """
    return (gt_margins > 0) & (margins < gamma)


def ensemble_failures(ensemble_margins: torch.Tensor) -> torch.Tensor:
    """Epistemic failures: pairs on which the ensemble's heads disagree in sign.

    ensemble_margins: (heads, n) Δ_i of each head; a pair is a failure when some head puts
    o_T above o_NT (Δ > 0) and another does not (Δ <= 0). A static set: it needs no γ_t.
    """
    positive = ensemble_margins > 0
    return positive.any(0) & ~positive.all(0)


def bootstrap_ensemble_margins(diffs: torch.Tensor, pair_loss, heads: int, rounds: int,
                               lr: float, generator: torch.Generator) -> torch.Tensor:
    """(heads, n) margins of `heads` linear base heads, head e fitted by full-batch Adam on a
    bootstrap resample of the pairs (multiplicities from `generator`), minimising the mean of
    `pair_loss(Δ)` (elementwise, e.g. the hinge max(0, M − Δ)) over its resample."""
    n, d = diffs.shape
    draws = torch.randint(0, n, (heads, n), generator=generator)
    counts = torch.zeros(heads, n).scatter_add_(1, draws, torch.ones(heads, n)).to(diffs.device)
    bound = 1 / math.sqrt(d)
    theta = ((torch.rand(heads, d, generator=generator) * 2 - 1) * bound).to(diffs.device)
    theta.requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    with torch.enable_grad():
        for _ in range(rounds):
            optimizer.zero_grad()
            loss = (counts * pair_loss(theta @ diffs.t())).sum() / n
            loss.backward()
            optimizer.step()
    return (theta.detach() @ diffs.t())


def failure_budget(n_failures: int, batch_size: int, p: float, budget: str) -> int:
    """|S_t|: ceil(p |F_t|) ("of_failures"), or min(|F_t|, ceil(p · batch)) ("of_batch")."""
    if budget == "of_failures":
        return math.ceil(p * n_failures)
    if budget == "of_batch":
        return min(n_failures, math.ceil(p * batch_size))
    raise ValueError(f"unknown failure budget {budget!r}")


def sample_failures(failure_mask: torch.Tensor, margins: torch.Tensor, k: int, how: str,
                    generator: torch.Generator) -> torch.Tensor:
    """Indices of S_t: k failures drawn uniformly ("random") or with the lowest margins."""
    failures = failure_mask.nonzero().squeeze(1)
    if k >= len(failures):
        return failures
    if how == "random":
        return failures[torch.randperm(len(failures), generator=generator)[:k]]
    if how == "hardest":
        return failures[margins[failures].topk(k, largest=False).indices]
    raise ValueError(f"unknown failure sampling {how!r}")


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
