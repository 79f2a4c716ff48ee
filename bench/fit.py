"""Benchmark: fit() vs a bare torch loop of the same shape, measured in the same run.

20 000 pairs x d = 768 x 100 full-batch rounds. The bare loop does the same matrix work
per round without the method's bookkeeping (schedules, failure finding and sampling,
history, divergence checks): a forward matrix-vector product per head, a hinge loss,
backward (for the failure head over a 10 % row subset, as fit() does for S_t), Adam step.
Ratio = our time / bare time (goal <= 2). A naive two-head autograd loop (full backward
for both heads) is printed too, for scale.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fairl.irl import FitConfig, fit


def bare_loop(diffs: torch.Tensor, n_heads: int, rounds: int, naive: bool = False) -> float:
    weights = torch.zeros(n_heads, diffs.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.05)
    subset = torch.randperm(len(diffs), generator=torch.Generator().manual_seed(0))
    subset = subset[: len(diffs) // 10]
    start = time.perf_counter()
    for _ in range(rounds):
        if n_heads == 1:
            loss = torch.relu(1.0 - diffs.mv(weights[0])).mean()
        elif naive:
            margins = diffs.mv(weights[0]) + diffs.mv(weights[1])
            loss = torch.relu(1.0 - margins).mean()
        else:
            margins = diffs.mv(weights[0]) + diffs.mv(weights[1].detach())
            loss = torch.relu(1.0 - margins).mean() \
                + torch.relu(2.0 - diffs[subset].mv(weights[1])).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def best_of(repeats: int, run) -> float:
    return min(run() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    theta = rng.standard_normal(args.dim) / np.sqrt(args.dim)
    h_a = rng.standard_normal((args.pairs, args.dim)).astype(np.float32)
    h_b = rng.standard_normal((args.pairs, args.dim)).astype(np.float32)
    a_wins = (h_a @ theta >= h_b @ theta)[:, None]
    h_T, h_NT = np.where(a_wins, h_a, h_b), np.where(a_wins, h_b, h_a)
    diffs = torch.from_numpy(h_T - h_NT)
    print(f"{args.pairs} pairs x d={args.dim} x {args.rounds} rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")

    def timed_fit(config: FitConfig) -> float:
        start = time.perf_counter()
        fit(h_T, h_NT, config)
        return time.perf_counter() - start

    timed_fit(FitConfig(rounds=2))  # warm up torch
    rows = [
        ("standard IRL", FitConfig(rounds=args.rounds, failure_mode="none", dual_path=False), 1),
        ("FA-IRL", FitConfig(rounds=args.rounds), 2),
    ]
    for name, config, heads in rows:
        ours = best_of(args.repeats, lambda c=config: timed_fit(c))
        bare = best_of(args.repeats, lambda k=heads: bare_loop(diffs, k, args.rounds))
        print(f"{name:>13}: fit {ours:6.3f} s   bare torch loop ({heads} head) {bare:6.3f} s   "
              f"ratio {ours / bare:5.2f}")
    naive = best_of(args.repeats, lambda: bare_loop(diffs, 2, args.rounds, naive=True))
    print(f"{'(scale)':>13}: naive two-head autograd loop, full backward for both {naive:6.3f} s")


if __name__ == "__main__":
    main()
