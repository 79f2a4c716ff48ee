"""Benchmark: fit() vs the floor of any linear fit, and vs bare torch loops, in the same run.

    python bench/fit.py [--shapes 20000x768,9243x384,default] [--rounds 100] [--repeats 3]
                        [--threads 2] [--clock wall|cpu] [--heads 1,8,32,128]

Floor: a numpy loop of two matrix-vector products per round on the difference matrix D
(forward margins D @ θ, gradient D.T @ g, a hinge in between, a plain SGD step), the least
work a linear fit does per round over all its rows. Shapes: 20 000 pairs x d = 768, and
9 243 x 384 (the default world's training set's shape); the goals are below. Their pairs are
planted and separable, so the hinge soon has no gradient on most of them, and fit() then
runs its backward product on the few rows that have one (fairl.irl.batch): it can go
under the floor. `default` (not in the default list: it loads the default world, embedded
by `make demo`) runs the same lines on that world's own training pairs, 9 243 x 384, where
the hinge stays active on 60-100 % of the pairs and every backward product runs over D. The per-round line splits the fit into its cost per
round (against the floor's) and its one-time cost, which the floor, given D, does not pay.

Bare torch loops (as before): the same matrix work as fit() without the method's
bookkeeping (schedules, failure finding and sampling, history, divergence checks): a forward
per head, a hinge, autograd backward (for the failure head over a 10 % row subset), Adam;
and a naive two-head autograd loop (full backward for both heads), for scale.

The fit reads read-only pairs, as a study's trials do (a loaded world is read-only), so
D = h_T - h_NT is built once and reused (fairl.irl.fit.difference_matrix); that one-time
build is timed and printed on its own, and "fit incl. D" adds it back.

Batched heads (fairl.irl.fit_many): K FA-IRL heads (seeds 0..K-1) in one pass, K in
{1, 8, 32, 128} (--heads); the "heads" lines print the per-head cost against the single fit
and the numpy floor measured in the same run. Goals (issue 27): single fit <= 1.3x the floor
at 9 243 x 384 and 20 000 x 768; at 32 heads per head <= 0.5x (9 243 x 384) and <= 0.25x
(20 000 x 768) of the single fit.

Repeats alternate fit / floor / bare and the best time of each is kept, so a busy machine
penalises all alike; each timed section starts after a 0.2 s pause, so the worker threads
one BLAS leaves spinning (OpenBLAS's after numpy, OpenMP's after torch) do not slow the next
section on a 2-core machine. numpy (OpenBLAS) and torch (MKL) both get --threads threads.
The ratio to the floor therefore also measures the two BLAS libraries on this CPU: the
header names the CPU and each BLAS, and the "one D·θ" line times a single product in each.
(Seen 2026-12-02 on an AMD EPYC: torch's MKL product took the same 5.7 ms on 1 and 2
threads, OpenBLAS 5.0 and 3.0 ms; on the earlier stops' machine they were on a par.)
--clock cpu times process CPU time instead of wall time: with --threads 1 on a machine
other jobs share it leaves out the time spent waiting for a core (with more threads it
counts OpenMP's spin-waits, so use wall time there).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from fairl.irl import FitConfig, fit, fit_many
from fairl.irl.fit import difference_matrix

clock = time.perf_counter


PAUSE = 0.2  # seconds before each timed section: the other BLAS's spinning threads settle


def numpy_floor(diffs: np.ndarray, rounds: int, lr: float = 0.05) -> float:
    """Two matrix-vector products per round: margins D @ θ, gradient D.T @ g."""
    theta = np.zeros(diffs.shape[1], dtype=np.float32)
    scale = np.float32(-1 / len(diffs))
    time.sleep(PAUSE)
    start = clock()
    for _ in range(rounds):
        margins = diffs @ theta
        g = (margins < 1).astype(np.float32) * scale  # ∂/∂Δ of mean max(0, 1 - Δ)
        theta -= np.float32(lr) * (diffs.T @ g)
    return clock() - start


def bare_loop(diffs: torch.Tensor, n_heads: int, rounds: int, naive: bool = False) -> float:
    weights = torch.zeros(n_heads, diffs.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.05)
    subset = torch.randperm(len(diffs), generator=torch.Generator().manual_seed(0))
    subset = subset[: len(diffs) // 10]
    time.sleep(PAUSE)
    start = clock()
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
    return clock() - start


def planted_pairs(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(d) / np.sqrt(d)
    h_a = rng.standard_normal((n, d)).astype(np.float32)
    h_b = rng.standard_normal((n, d)).astype(np.float32)
    a_wins = (h_a @ theta >= h_b @ theta)[:, None]
    return np.where(a_wins, h_a, h_b), np.where(a_wins, h_b, h_a)


def one_product(matrix, repeats: int, calls: int = 20) -> float:
    """Best-of-`repeats` mean time of matrix @ θ (torch tensor or numpy array)."""
    theta = matrix[0] * 0 + 1
    best = float("inf")
    for _ in range(repeats):
        time.sleep(PAUSE)
        start = clock()
        for _ in range(calls):
            matrix @ theta
        best = min(best, (clock() - start) / calls)
    return best


def machine() -> str:
    """CPU model and each library's BLAS: the fit-to-floor ratio depends on them."""
    from threadpoolctl import threadpool_info

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    numpy_blas = next((f"{i['internal_api']} {i['version']}" for i in threadpool_info()
                       if i["user_api"] == "blas" and "numpy" in i["filepath"]), "unknown")
    torch_blas = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    return f"{cpu}; numpy BLAS {numpy_blas}, torch BLAS {torch_blas}"


def world_pairs(shape: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(h_T, h_NT, what they are) for a --shapes entry: NxD planted pairs, or `default`."""
    if shape == "default":
        from fairl.worlds import load_world

        train = load_world("default").train
        return train.h_T.copy(), train.h_NT.copy(), "the default world's training pairs"
    n, d = (int(x) for x in shape.split("x"))
    return *planted_pairs(n, d), "planted pairs"


def bench_shape(h_T: np.ndarray, h_NT: np.ndarray, what: str, rounds: int, repeats: int,
                batches: list[int]) -> None:
    n, d = h_T.shape
    diffs_np = h_T - h_NT
    diffs = torch.from_numpy(diffs_np)
    h_T.flags.writeable = h_NT.flags.writeable = False  # as a loaded world's pairs

    def timed_fit(config: FitConfig) -> float:
        time.sleep(PAUSE)
        start = clock()
        fit(h_T, h_NT, config)
        return clock() - start

    def timed_build() -> float:  # what fit pays once per read-only pairs (writeable: per fit)
        fresh_T, fresh_NT = h_T.copy(), h_NT.copy()
        time.sleep(PAUSE)
        start = clock()
        difference_matrix(fresh_T, fresh_NT)
        return clock() - start

    timed_fit(FitConfig(rounds=2))  # warm up torch; builds D once
    numpy_floor(diffs_np, 2)
    build = min(timed_build() for _ in range(repeats))
    print(f"{n} {what} x d={d} x {rounds} rounds; D = h_T - h_NT built and checked once "
          f"(fit reuses it; the floor is handed it): {build * 1e3:.1f} ms")
    torch_mv, numpy_mv = one_product(diffs, repeats), one_product(diffs_np, repeats)
    print(f"  one D·θ: torch {torch_mv * 1e3:.2f} ms, numpy {numpy_mv * 1e3:.2f} ms, ratio "
          f"{torch_mv / numpy_mv:.2f} (the two BLAS libraries' own gap, below any fit)")
    rows = [
        ("standard IRL", FitConfig(rounds=rounds, failure_mode="none", dual_path=False), 1),
        ("FA-IRL", FitConfig(rounds=rounds), 2),
    ]
    for name, config, heads in rows:
        ours = floor = bare = once = float("inf")
        one_round = dataclasses.replace(config, rounds=1)
        for _ in range(repeats):
            ours = min(ours, timed_fit(config))
            once = min(once, timed_fit(one_round))
            floor = min(floor, numpy_floor(diffs_np, rounds))
            bare = min(bare, bare_loop(diffs, heads, rounds))
        per_round = (ours - once) / (rounds - 1)
        print(f"{name:>13}: fit {ours:6.3f} s   numpy floor {floor:6.3f} s   "
              f"ratio {ours / floor:5.2f}   | bare torch loop ({heads} head) {bare:6.3f} s   "
              f"ratio {ours / bare:5.2f}")
        print(f"{'':>13}  per round (fit of {rounds} rounds - fit of 1) / {rounds - 1}: "
              f"{per_round * 1e3:6.3f} ms vs the floor's {floor / rounds * 1e3:6.3f} ms, ratio "
              f"{per_round / (floor / rounds):5.2f}; fixed cost (init, schedules, history) "
              f"{(once - per_round) * 1e3:5.1f} ms; fit incl. D {ours + build:6.3f} s, ratio "
              f"{(ours + build) / floor:5.2f}")
    naive = min(bare_loop(diffs, 2, rounds, naive=True) for _ in range(repeats))
    print(f"{'(scale)':>13}: naive two-head autograd loop, full backward for both {naive:6.3f} s")
    single = ours  # the FA-IRL fit of the loop above
    for k in batches:
        configs = [FitConfig(rounds=rounds, seed=seed) for seed in range(k)]
        best = float("inf")
        for _ in range(repeats):
            time.sleep(PAUSE)
            start = clock()
            fit_many(h_T, h_NT, configs)
            best = min(best, clock() - start)
        print(f"{'heads':>13}: K={k:3d} FA-IRL heads in one pass {best:7.3f} s, per head "
              f"{best / k:6.3f} s = {best / k / single:5.3f}x the single fit, "
              f"{best / k / floor:5.2f}x the numpy floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="20000x768,9243x384",
                        help="comma-separated: NxD planted pairs, or default (the default world)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="for torch and numpy alike")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--heads", default="1,8,32,128", help="K of the batched lines")
    args = parser.parse_args()

    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} threads "
          f"(torch and numpy), best of {args.repeats}, {args.clock} time\n{machine()}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with threadpool_limits(args.threads):
        for shape in args.shapes.split(","):
            bench_shape(*world_pairs(shape), args.rounds, args.repeats,
                        [int(k) for k in args.heads.split(",") if k])


if __name__ == "__main__":
    main()
