"""Training sets of exact size and exact T→NT fraction.

``compose(data, n, tnt_fraction, seed)`` returns exactly ``n`` pairs of which exactly
``k = floor(n * tnt_fraction + 0.5)`` are T→NT (round half up, so n = 5, fraction 0.5 gives
3), drawn without replacement with ``np.random.default_rng(seed)``: k from the T→NT pairs
and n - k from the others. Rows keep their original order (sorted indices). When the
data cannot supply that many, it raises :class:`CompositionError` naming what is short;
it never returns fewer rows.

Works on ``fairl.pairs.Pairs`` (the in-memory arrays studies use) and on a
``datasets.Dataset`` split of a PairSet (its ``tnt`` column).
"""

from __future__ import annotations

import numpy as np

from fairl.pairs import Pairs


class CompositionError(ValueError):
    """The data hold too few T→NT (or other) pairs for the requested composition."""


def n_tnt_for(n: int, tnt_fraction: float) -> int:
    """How many T→NT pairs a set of n pairs at `tnt_fraction` has: round half up."""
    if n < 0 or not 0.0 <= tnt_fraction <= 1.0:
        raise ValueError(f"need n >= 0 and 0 <= tnt_fraction <= 1, got n={n}, {tnt_fraction}")
    # The 1e-9 absorbs float error such as 0.35 * 10 = 3.4999999999999996.
    return min(n, int(np.floor(n * tnt_fraction + 0.5 + 1e-9)))


def compose_indices(tnt: np.ndarray, n: int, tnt_fraction: float,
                    seed: int | np.random.Generator = 0) -> np.ndarray:
    """Sorted row indices of an exact composition, given the boolean T→NT mask of the data."""
    tnt = np.asarray(tnt, dtype=bool)
    k = n_tnt_for(n, tnt_fraction)
    tnt_rows, other_rows = np.flatnonzero(tnt), np.flatnonzero(~tnt)
    short = []
    if k > len(tnt_rows):
        short.append(f"need {k} T→NT pairs, dataset has {len(tnt_rows)}")
    if n - k > len(other_rows):
        short.append(f"need {n - k} non-T→NT pairs, dataset has {len(other_rows)}")
    if short:
        raise CompositionError(
            f"cannot compose n={n} at tnt_fraction={tnt_fraction} from {len(tnt)} pairs: "
            + "; ".join(short)
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(tnt_rows, size=k, replace=False),
                             rng.choice(other_rows, size=n - k, replace=False)])
    return np.sort(chosen)


def compose_pairs(pairs: Pairs, n: int, tnt_fraction: float,
                  seed: int | np.random.Generator = 0) -> Pairs:
    """Exactly n of `pairs` with exactly n_tnt_for(n, tnt_fraction) T→NT pairs."""
    if pairs.tnt is None:
        raise CompositionError("these pairs have no T→NT labels (Pairs.tnt is None)")
    return pairs.subset(compose_indices(pairs.tnt, n, tnt_fraction, seed))


def compose_dataset(dataset, n: int, tnt_fraction: float, seed: int | np.random.Generator = 0):
    """The same on a `datasets.Dataset` with a boolean ``tnt`` column."""
    if "tnt" not in dataset.column_names:
        raise CompositionError("this dataset has no 'tnt' column")
    return dataset.select(compose_indices(np.asarray(dataset["tnt"]), n, tnt_fraction, seed))


def compose(data, n: int, tnt_fraction: float, seed: int | np.random.Generator = 0):
    """`compose_pairs` for `Pairs`, `compose_dataset` for a `datasets.Dataset`."""
    if isinstance(data, Pairs):
        return compose_pairs(data, n, tnt_fraction, seed)
    return compose_dataset(data, n, tnt_fraction, seed)
