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
