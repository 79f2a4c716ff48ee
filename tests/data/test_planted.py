import numpy as np

from fairl.data.planted import PlantedConfig, make_planted


def test_same_seed_same_world_and_hash():
    a, b = make_planted(PlantedConfig(n_train=100, n_test=50, seed=1)), \
        make_planted(PlantedConfig(n_train=100, n_test=50, seed=1))
    assert np.array_equal(a.train.h_T, b.train.h_T) and a.dataset_hash == b.dataset_hash
    c = make_planted(PlantedConfig(n_train=100, n_test=50, seed=2))
    assert c.dataset_hash != a.dataset_hash


def test_clean_world_orders_every_pair_by_the_true_reward():
    world = make_planted(PlantedConfig(n_train=500, n_test=100, d=16))
    theta = world.info["theta_star"]
    np.testing.assert_allclose(world.train.gt_T, world.train.h_T @ theta, rtol=1e-4, atol=1e-5)
    assert np.all(world.train.gt_T >= world.train.gt_NT)


def test_label_noise_swaps_about_that_fraction_of_training_pairs_only():
    world = make_planted(PlantedConfig(n_train=4000, n_test=1000, label_noise=0.2))
    swapped = np.mean(world.train.gt_T < world.train.gt_NT)
    assert 0.17 < swapped < 0.23
    assert np.all(world.test.gt_T >= world.test.gt_NT)


def test_near_ties_have_tiny_true_gaps():
    world = make_planted(PlantedConfig(n_train=2000, near_tie_frac=1.0, near_tie_gap=0.05))
    gaps = world.train.gt_T - world.train.gt_NT
    assert np.all(gaps <= 0.05 + 1e-5)
    # ... yet the outputs differ a lot elsewhere
    assert np.linalg.norm(world.train.h_T - world.train.h_NT, axis=1).mean() > 5


def test_tnt_labels_cross_the_toxicity_threshold():
    world = make_planted(PlantedConfig(n_train=1000, toxic_threshold=0.0))
    tnt = world.train.tnt
    assert 0.1 < tnt.mean() < 0.9
    assert np.all(world.train.gt_NT[tnt] < 0) and np.all(world.train.gt_T[tnt] >= 0)


def _train_test_digest(world) -> str:
    import hashlib

    digest = hashlib.sha256()
    for pairs in (world.train, world.test):
        for array in (pairs.h_T, pairs.h_NT, pairs.gt_T, pairs.gt_NT, pairs.tnt):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


# sha256 of the train and test arrays as make_planted drew them before the validation split
# and prompt groups existed (computed with that version, commit 2c13d9f).
BEFORE_VALIDATION = [
    ({"n_train": 300, "n_test": 200, "d": 8, "near_tie_frac": 0.3, "hard_frac": 0.3,
      "label_noise": 0.05, "seed": 0}, "789cbbb18260179d374eda67175ec929"),
    ({"n_train": 500, "n_test": 100, "d": 16, "seed": 3}, "b5721ddca61fae5bb1f3befa23dc24f8"),
]


def test_validation_and_prompt_groups_leave_train_and_test_bit_identical():
    for options, expected in BEFORE_VALIDATION:
        for extra in ({}, {"n_val": 50}, {"max_pairs_per_prompt": 4},
                      {"n_val": 1000, "max_pairs_per_prompt": 3}):
            world = make_planted(PlantedConfig(**options, **extra))
            assert _train_test_digest(world) == expected, extra
            assert len(world.validation) == extra.get("n_val", options["n_test"])
            assert np.all(world.validation.gt_T >= world.validation.gt_NT)  # never noised
            assert not np.array_equal(world.validation.h_T[:10], world.test.h_T[:10])


def test_prompt_groups_hold_two_to_k_pairs_and_no_prompt_is_in_two_splits():
    world = make_planted(PlantedConfig(n_train=400, n_test=200, n_val=100, d=4,
                                       max_pairs_per_prompt=4))
    seen = set()
    for pairs in (world.train, world.test, world.validation):
        ids, sizes = np.unique(pairs.prompt_ids, return_counts=True)
        assert np.all(np.diff(pairs.prompt_ids) >= 0)  # consecutive runs
        assert sizes[:-1].min() >= 2 and sizes.max() <= 4  # the last run may be cut short
        assert not seen & set(ids.tolist())
        seen |= set(ids.tolist())
    plain = make_planted(PlantedConfig(n_train=400, n_test=200, d=4))
    assert np.array_equal(plain.test.prompt_ids, np.arange(200))  # default: one pair each


def test_a_loaded_world_is_read_only():
    from fairl.worlds import load_world

    world = load_world("planted", {"n_train": 60, "n_test": 30, "d": 4, "seed": 11})
    arrays = [getattr(pairs, name) for pairs in (world.train, world.test)
              for name in ("h_T", "h_NT", "gt_T", "gt_NT")]
    assert arrays and not any(array.flags.writeable for array in arrays)
    assert load_world("planted", {"n_train": 60, "n_test": 30, "d": 4, "seed": 11}) is world
