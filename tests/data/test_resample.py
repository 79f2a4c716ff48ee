import numpy as np
import pytest

from fairl.data.resample import bootstrap_indices, bootstrap_prompts, resample
from fairl.pairs import Pairs


def _pairs(prompt_ids):
    n = len(prompt_ids)
    h = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    return Pairs(h_T=h, h_NT=-h, gt_T=np.arange(n, dtype=float), gt_NT=-np.arange(n, dtype=float),
                 prompt_ids=np.asarray(prompt_ids))


def test_a_drawn_prompt_brings_all_its_pairs_and_prompts_are_drawn_with_replacement():
    ids = np.array([7, 7, 7, 3, 3, 9, 1, 1, 1, 1])
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = bootstrap_indices(ids, rng)
        drawn = ids[index]
        for prompt in np.unique(drawn):
            rows = index[drawn == prompt]
            # whole copies of the prompt: every one of its rows, equally often
            counts = np.bincount(rows, minlength=len(ids))[ids == prompt]
            assert counts.min() == counts.max() >= 1
    sizes = [len(np.unique(ids[bootstrap_indices(ids, np.random.default_rng(s))]))
             for s in range(50)]
    assert min(sizes) < 4  # with replacement: some prompt is usually missing


def test_resampling_is_keyed_by_the_seed_and_none_changes_nothing():
    pairs = _pairs(np.repeat(np.arange(30), 3))
    assert resample(pairs, "none", 5) is pairs
    a, b, c = (resample(pairs, "bootstrap", seed) for seed in (5, 5, 6))
    assert np.array_equal(a.h_T, b.h_T) and not np.array_equal(a.h_T, c.h_T)
    same = bootstrap_prompts(pairs, np.random.default_rng(5))
    assert np.array_equal(same.gt_T, a.gt_T)
    with pytest.raises(ValueError, match="data_resample"):
        resample(pairs, "jackknife", 0)


def test_pairs_without_prompt_ids_resample_single_pairs():
    pairs = _pairs(np.arange(12))
    pairs = Pairs(h_T=pairs.h_T, h_NT=pairs.h_NT)
    out = bootstrap_prompts(pairs, 1)
    assert len(out) == 12 and out.prompt_ids is None
