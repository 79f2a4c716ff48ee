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
Validation pairs (model selection) are drawn like test pairs, after train and test, so
train and test are the same arrays whatever n_val is; prompt groups (`max_pairs_per_prompt`)
are drawn last of all, for the same reason.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from fairl.config import STRICT, Float, Int
from fairl.pairs import Pairs, World

# Drawing takes ~20 bytes per embedding number at its peak (measured: 16M numbers, 385 MB) and
# the fit another ~10, so 1.5e8 numbers (~4.5 GB) leave room on a 24 GB machine.
MAX_PAIRS = 10_000_000
MAX_D = 65_536
MAX_NUMBERS = 150_000_000  # (n_train + n_test + n_val) * d


@dataclass(config=STRICT)
class PlantedConfig:
    """Size and difficulty of a planted world."""

    # Float, Int: strict per field ('16' and 1e12, a float, are not ints); see fairl.config.
    n_train: Int = Field(4000, ge=2, le=MAX_PAIRS, description=f"training pairs, <= {MAX_PAIRS}")
    n_test: Int = Field(2000, ge=2, le=MAX_PAIRS,
                        description=f"held-out pairs (never label-noised), <= {MAX_PAIRS}")
    n_val: Int | None = Field(None, ge=2, le=MAX_PAIRS,
                              description="validation pairs (never label-noised); default n_test")
    d: Int = Field(64, ge=2, le=MAX_D, description=f"embedding dimension, <= {MAX_D}; "
                   f"(n_train + n_test + n_val) * d <= {MAX_NUMBERS} (~4.5 GB: fits 24 GB)")
    label_noise: Float = Field(0.0, ge=0, le=0.5, description="fraction of train pairs swapped")
    near_tie_frac: Float = Field(0.0, ge=0, le=1, description="fraction of near-tie pairs")
    near_tie_gap: Float = Field(0.05, gt=0, description="max true gap |Δ*| of a near tie")
    hard_frac: Float = Field(0.0, ge=0, le=1, description="fraction of pairs in the hard region")
    hard_nuisance: Float = Field(3.0, ge=0, description="nuisance scale in the hard region")
    toxic_threshold: Float = Field(0.0, description="r* below this counts as toxic (T→NT labels)")
    max_pairs_per_prompt: Int = Field(
        1, ge=1, le=64, description="1: every pair is its own prompt; k > 1: prompts of 2..k "
                                    "pairs (sizes uniform), the clusters of STARC and bootstrap")
    seed: Int = Field(0, ge=0, description="seed of θ* and of every draw")

    # A field validator (declared after n_train and n_test) so the error names a field: d.
    @field_validator("d")
    @classmethod
    def _fits_in_memory(cls, value: int, info: ValidationInfo) -> int:
        n_test = info.data.get("n_test", 0)
        n_val = info.data.get("n_val") or n_test
        pairs = info.data.get("n_train", 0) + n_test
        if (pairs + n_val) * value > MAX_NUMBERS:
            raise ValueError(f"(n_train + n_test) * d + n_val * d = {(pairs + n_val) * value} "
                             f"numbers exceeds the {MAX_NUMBERS} limit (~4.5 GB to draw and fit)")
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


def prompt_groups(rng: np.random.Generator, n: int, max_size: int, start: int = 0) -> np.ndarray:
    """(n,) prompt ids from `start` on: consecutive runs of 2..max_size pairs (the last run may be
    shorter); max_size 1: every pair its own prompt."""
    if max_size <= 1:
        return np.arange(start, start + n)
    sizes = rng.integers(2, max_size + 1, size=n // 2 + 1)
    return start + np.repeat(np.arange(len(sizes)), sizes)[:n]


def make_planted(config: PlantedConfig | None = None) -> World:
    """A planted world; everything is drawn from np.random.default_rng(config.seed)."""
    config = config or PlantedConfig()
    rng = np.random.default_rng(config.seed)
    theta = rng.standard_normal(config.d)
    theta /= np.linalg.norm(theta)
    train = _draw_pairs(rng, theta, config.n_train, config, config.label_noise)
    test = _draw_pairs(rng, theta, config.n_test, config, 0.0)
    # Drawn after train and test: the same options give the same train and test arrays.
    validation = _draw_pairs(rng, theta, config.n_val or config.n_test, config, 0.0)
    splits = [train, test, validation]
    if config.max_pairs_per_prompt > 1:
        start = 0
        for index, pairs in enumerate(splits):  # disjoint ids: no prompt in two splits
            ids = prompt_groups(rng, len(pairs), config.max_pairs_per_prompt, start)
            splits[index] = dataclasses.replace(pairs, prompt_ids=ids)
            start = int(ids.max()) + 1
    train, test, validation = splits
    digest = hashlib.sha256()
    for pairs in splits:
        for array in (pairs.h_T, pairs.h_NT, pairs.prompt_ids):
            digest.update(np.ascontiguousarray(array).tobytes())
    digest = digest.hexdigest()[:16]
    return World(name="planted", train=train, test=test, validation=validation,
                 dataset_hash=f"planted-{digest}", info={"theta_star": theta, "config": config})
