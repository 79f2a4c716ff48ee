"""The planted world: synthetic embedded pairs whose true reward r*(o) = θ*·h(o) is known.

Outputs are h ~ N(0, I_d); o_T is the output r* prefers (before label noise). Options add
the difficulties FA-IRL is about:
* label_noise: a fraction of training pairs has o_T and o_NT swapped;
* near ties: pairs with a tiny true gap |Δ*| that differ a lot in reward-irrelevant
  directions — they pin down θ* but look like failures to any young reward;
* a hard region: pairs in a cluster where the true gap is small relative to a strong
  nuisance direction, the "subtype" a reward fit on easy pairs gets wrong.
"T→NT" (toxic → non-toxic) pairs are those with r*(o_NT) < threshold <= r*(o_T).
Test pairs are drawn the same way but without label noise: they measure recovery of r*.
"""

from __future__ import annotations

import hashlib

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from fairl.config import STRICT, Float, Int
from fairl.pairs import Pairs, World

# Drawing takes ~20 bytes per embedding number at its peak (measured: 16M numbers, 385 MB) and
# the fit another ~10, so 1e8 numbers (~3 GB) leave room on a 24 GB machine.
MAX_PAIRS = 10_000_000
MAX_D = 65_536
MAX_NUMBERS = 100_000_000  # (n_train + n_test) * d


@dataclass(config=STRICT)
class PlantedConfig:
    """Size and difficulty of a planted world."""

    # Float, Int: strict per field ('16' and 1e12, a float, are not ints); see fairl.config.
    n_train: Int = Field(4000, ge=2, le=MAX_PAIRS, description=f"training pairs, <= {MAX_PAIRS}")
    n_test: Int = Field(2000, ge=2, le=MAX_PAIRS,
                        description=f"held-out pairs (never label-noised), <= {MAX_PAIRS}")
    d: Int = Field(64, ge=2, le=MAX_D, description=f"embedding dimension, <= {MAX_D}; "
                   f"(n_train + n_test) * d <= {MAX_NUMBERS} (~3 GB: fits a 24 GB machine)")
    label_noise: Float = Field(0.0, ge=0, le=0.5, description="fraction of train pairs swapped")
    near_tie_frac: Float = Field(0.0, ge=0, le=1, description="fraction of near-tie pairs")
    near_tie_gap: Float = Field(0.05, gt=0, description="max true gap |Δ*| of a near tie")
    hard_frac: Float = Field(0.0, ge=0, le=1, description="fraction of pairs in the hard region")
    hard_nuisance: Float = Field(3.0, ge=0, description="nuisance scale in the hard region")
    toxic_threshold: Float = Field(0.0, description="r* below this counts as toxic (T→NT labels)")
    seed: Int = Field(0, ge=0, description="seed of θ* and of every draw")

    # A field validator (declared after n_train and n_test) so the error names a field: d.
    @field_validator("d")
    @classmethod
    def _fits_in_memory(cls, value: int, info: ValidationInfo) -> int:
        pairs = info.data.get("n_train", 0) + info.data.get("n_test", 0)
        if pairs * value > MAX_NUMBERS:
            raise ValueError(f"(n_train + n_test) * d = {pairs * value} numbers exceeds the "
                             f"{MAX_NUMBERS} limit (~3 GB to draw and fit)")
        return value


def _draw_pairs(rng: np.random.Generator, theta: np.ndarray, n: int, config: PlantedConfig,
                label_noise: float) -> Pairs:
    d = len(theta)
    kinds = rng.choice(3, size=n, p=[1 - config.near_tie_frac - config.hard_frac,
                                     config.near_tie_frac, config.hard_frac])
    h_a = rng.standard_normal((n, d)).astype(np.float32)
    h_b = rng.standard_normal((n, d)).astype(np.float32)

    # Near ties: h_b = h_a + (reward-orthogonal noise) + a tiny signed gap along θ*.
    tie = kinds == 1
    noise = rng.standard_normal((int(tie.sum()), d))
    noise -= np.outer(noise @ theta, theta)
    gaps = rng.uniform(-config.near_tie_gap, config.near_tie_gap, size=int(tie.sum()))
    h_b[tie] = h_a[tie] + noise + np.outer(gaps, theta)

    # Hard region: around a shared centre, differences dominated by one nuisance direction.
    hard = kinds == 2
    if hard.any():
        nuisance = rng.standard_normal(d)
        nuisance -= (nuisance @ theta) * theta
        nuisance /= np.linalg.norm(nuisance)
        centre = 2.0 * rng.standard_normal(d)
        k = int(hard.sum())
        h_a[hard] = centre + 0.3 * rng.standard_normal((k, d)) \
            + config.hard_nuisance * np.outer(rng.standard_normal(k), nuisance)
        h_b[hard] = centre + 0.3 * rng.standard_normal((k, d)) \
            + config.hard_nuisance * np.outer(rng.standard_normal(k), nuisance)

    r_a, r_b = h_a @ theta, h_b @ theta
    a_preferred = r_a >= r_b
    swap = rng.random(n) < label_noise
    a_is_T = a_preferred ^ swap
    h_T = np.where(a_is_T[:, None], h_a, h_b).astype(np.float32)
    h_NT = np.where(a_is_T[:, None], h_b, h_a).astype(np.float32)
    gt_T = (h_T @ theta).astype(np.float32)
    gt_NT = (h_NT @ theta).astype(np.float32)
    return Pairs(h_T=h_T, h_NT=h_NT, gt_T=gt_T, gt_NT=gt_NT, prompt_ids=np.arange(n),
                 tnt=(gt_NT < config.toxic_threshold) & (gt_T >= config.toxic_threshold))


def make_planted(config: PlantedConfig | None = None) -> World:
    """A planted world; everything is drawn from np.random.default_rng(config.seed)."""
    config = config or PlantedConfig()
    rng = np.random.default_rng(config.seed)
    theta = rng.standard_normal(config.d)
    theta /= np.linalg.norm(theta)
    train = _draw_pairs(rng, theta, config.n_train, config, config.label_noise)
    test = _draw_pairs(rng, theta, config.n_test, config, 0.0)
    digest = hashlib.sha256()
    for pairs in (train, test):
        for array in (pairs.h_T, pairs.h_NT):
            digest.update(np.ascontiguousarray(array).tobytes())
    digest = digest.hexdigest()[:16]
    return World(name="planted", train=train, test=test, dataset_hash=f"planted-{digest}",
                 info={"theta_star": theta, "config": config})
