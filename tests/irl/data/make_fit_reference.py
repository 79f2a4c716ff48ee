"""Write fit_reference.npz: what fit() returned for fixed configs on a fixed planted world.

tests/irl/test_fit.py::test_fit_reproduces_the_stored_reference checks that a rewritten fit
still returns these numbers (the test reads world, rounds and configs from the file's meta).
The file was written, with 1 thread, by the fit as of commit 8df9269 (two `diffs.mv` passes
per step, autograd, one `.item()` per loss term per step), before the single-pass rewrite:

    git archive 8df9269 fairl | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/irl/data/make_fit_reference.py

Regenerate only when a change of the numbers is intended, and say so in the commit.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from fairl.data.planted import PlantedConfig, make_planted
from fairl.irl import FitConfig, fit

OUT = Path(__file__).with_name("fit_reference.npz")
# Label noise, near ties and a hard region so every failure mode finds failures to sample.
WORLD = PlantedConfig(n_train=2000, n_test=2, d=32, label_noise=0.1, near_tie_frac=0.1,
                      hard_frac=0.1, seed=5)
ROUNDS = 40
CONFIGS = {
    "standard_irl": {"failure_mode": "none", "dual_path": False},
    "fa_irl_margin": {},
    "fa_irl_ground_truth": {"failure_mode": "ground_truth"},
    "standard_max_entropy": {"failure_mode": "none", "dual_path": False,
                             "objective": "max_entropy"},
    "fa_irl_max_entropy": {"objective": "max_entropy", "gamma_shape": "cosine"},
    "fa_irl_batch_size": {"batch_size": 300, "seed": 2},
    "fa_irl_fail_grad_to_base": {"fail_grad_to_base": True, "objective": "max_entropy"},
    "reweight_no_rf": {"dual_path": False, "failure_mode": "ground_truth"},
    "fa_irl_of_batch_hardest": {"failure_budget": "of_batch", "failure_sampling": "hardest",
                                "lambda_fixed": True, "lambda0": 1.0},
    "dual_path_no_failures_adamw": {"failure_mode": "none", "optimizer": "adamw"},
    "fa_irl_sgd_batches": {"optimizer": "sgd", "lr": 0.1, "batch_size": 512,
                           "fail_grad_to_base": True},
}
HISTORY_FLOATS = ("loss", "loss_base", "loss_fail", "loss_l2", "margin_mean", "margin_min")
HISTORY_INTS = ("n_failures", "n_sampled")


def planted_train():
    return make_planted(WORLD).train


def config_for(name: str) -> FitConfig:
    return FitConfig(rounds=ROUNDS, **CONFIGS[name])


def main() -> None:
    torch.set_num_threads(1)
    train = planted_train()
    arrays = {}
    for name in CONFIGS:
        result = fit(train.h_T, train.h_NT, config_for(name), train.gt_T, train.gt_NT)
        arrays[f"{name}/theta_D"] = result.theta_D
        arrays[f"{name}/theta_F"] = (result.theta_F if result.theta_F is not None
                                     else np.zeros(0, np.float32))
        arrays[f"{name}/biases"] = np.array([result.b_D, result.b_F], np.float32)
        for key in HISTORY_FLOATS:
            arrays[f"{name}/{key}"] = np.array([r[key] for r in result.history])
        for key in HISTORY_INTS:
            arrays[f"{name}/{key}"] = np.array([r[key] for r in result.history], np.int64)
        arrays[f"{name}/failure_counts"] = result.failure_counts.astype(np.int32)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False,
                            capture_output=True, text=True, cwd=Path(__file__).parent)
    commit = commit.stdout.strip()
    meta = {"commit": commit, "fit_module": inspect.getfile(fit), "threads": 1,
            "world": dataclasses.asdict(WORLD), "rounds": ROUNDS, "configs": CONFIGS}
    np.savez_compressed(OUT, **arrays, meta=json.dumps(meta))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB) with {meta['fit_module']} "
          f"from commit {commit}")


if __name__ == "__main__":
    main()
