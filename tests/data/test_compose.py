import datasets
import numpy as np
import pytest

from fairl.data.compose import (
    CompositionError,
    compose,
    compose_dataset,
    compose_indices,
    compose_pairs,
    n_tnt_for,
)
from fairl.pairs import Pairs


def _pairs(n=100, n_tnt=30, d=4):
    rng = np.random.default_rng(0)
    tnt = np.zeros(n, dtype=bool)
    tnt[rng.choice(n, n_tnt, replace=False)] = True
    return Pairs(h_T=rng.normal(size=(n, d)).astype(np.float32),
                 h_NT=rng.normal(size=(n, d)).astype(np.float32),
                 gt_T=rng.normal(size=n), gt_NT=rng.normal(size=n),
                 prompt_ids=np.arange(n) // 2, tnt=tnt,
                 text_T=[f"t{i}" for i in range(n)], text_NT=[f"nt{i}" for i in range(n)],
                 prompts=[f"p{i // 2}" for i in range(n)])


@pytest.mark.parametrize("n, fraction, expected_tnt", [
    (10, 0.0, 0), (10, 1.0, 10), (30, 1.0, 30), (70, 0.0, 0), (100, 0.3, 30),
    (20, 0.5, 10), (5, 0.5, 3), (7, 0.1, 1), (10, 0.35, 4), (10, 0.25, 3), (1, 0.49, 0),
])
def test_exact_size_and_tnt_count(n, fraction, expected_tnt):
    pairs = _pairs()
    out = compose(pairs, n, fraction, seed=1)
    assert isinstance(out, Pairs) and len(out) == n
    assert out.tnt.sum() == expected_tnt == n_tnt_for(n, fraction)
    assert len(set(out.text_T)) == n  # without replacement
    # rows stay consistent across fields
    index = [int(t[1:]) for t in out.text_T]
    np.testing.assert_array_equal(out.tnt, pairs.tnt[index])
    assert out.text_NT == [f"nt{i}" for i in index]


def test_seeded_and_deterministic():
    pairs = _pairs()
    a = compose_indices(pairs.tnt, 40, 0.5, seed=3)
    assert (a == compose_indices(pairs.tnt, 40, 0.5, seed=3)).all()
    assert (a == compose_indices(pairs.tnt, 40, 0.5, np.random.default_rng(3))).all()
    assert not (a == compose_indices(pairs.tnt, 40, 0.5, seed=4)).all()
    assert (np.diff(a) > 0).all()


def test_errors_name_what_is_short():
    pairs = _pairs(n=100, n_tnt=30)
    with pytest.raises(CompositionError, match="need 40 T→NT pairs, dataset has 30"):
        compose_pairs(pairs, 80, 0.5)
    with pytest.raises(CompositionError, match="need 71 non-T→NT pairs, dataset has 70"):
        compose_pairs(pairs, 71, 0.0)
    with pytest.raises(CompositionError, match="need 101 T→NT pairs, dataset has 30"):
        compose_pairs(pairs, 101, 1.0)
    with pytest.raises(ValueError):
        compose_pairs(pairs, 10, 1.5)
    no_labels = Pairs(h_T=pairs.h_T, h_NT=pairs.h_NT)
    with pytest.raises(CompositionError, match="no T→NT labels"):
        compose_pairs(no_labels, 10, 0.5)


def test_compose_a_dataset():
    pairs = _pairs()
    ds = datasets.Dataset.from_dict({"pair_id": [f"p{i}" for i in range(100)],
                                     "tnt": pairs.tnt.tolist()})
    out = compose_dataset(ds, 50, 0.4, seed=0)
    assert len(out) == 50 and sum(out["tnt"]) == 20
    assert len(set(out["pair_id"])) == 50
    assert compose(ds, 50, 0.4, seed=0)["pair_id"] == out["pair_id"]
    with pytest.raises(CompositionError, match="need 31 T→NT pairs, dataset has 30"):
        compose(ds, 31, 1.0)
