"""Data replicates: a bootstrap of training pairs over prompts (a prompt carries all its pairs).

With `data_resample: bootstrap` a study's seed s also redraws its training set with
``bootstrap_prompts(pairs, np.random.default_rng(s))``, so the spread over seeds includes
the variance of the training data, not only the optimiser's.
"""

from __future__ import annotations

import numpy as np

from fairl.pairs import Pairs

RESAMPLES = ("none", "bootstrap")


def bootstrap_indices(prompt_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one prompt-cluster bootstrap: P prompts drawn with replacement from the
    P distinct prompts, each bringing all its rows (in row order within the prompt)."""
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim != 1 or len(prompt_ids) == 0:
        raise ValueError(f"prompt_ids must be a non-empty (n,) array, got {prompt_ids.shape}")
    _, codes = np.unique(prompt_ids, return_inverse=True)
    n_prompts = int(codes.max()) + 1
    rows = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[rows], np.arange(n_prompts + 1))
    drawn = rng.integers(0, n_prompts, n_prompts)
    return np.concatenate([rows[starts[p]:starts[p + 1]] for p in drawn])


def bootstrap_prompts(pairs: Pairs, rng: np.random.Generator | int) -> Pairs:
    """The pairs of a prompt bootstrap (see `bootstrap_indices`); every pair is its own prompt
    when the pairs have no prompt ids."""
    rng = np.random.default_rng(rng)
    ids = pairs.prompt_ids if pairs.prompt_ids is not None else np.arange(len(pairs))
    return pairs.subset(bootstrap_indices(ids, rng))


def resample(pairs: Pairs, how: str, seed: int) -> Pairs:
    """`pairs` unchanged for 'none'; a prompt bootstrap drawn from default_rng(seed) for
    'bootstrap'."""
    if how == "none":
        return pairs
    if how == "bootstrap":
        return bootstrap_prompts(pairs, np.random.default_rng(seed))
    raise ValueError(f"data_resample: expected one of {RESAMPLES}, got {how!r}")
