import numpy as np
import pytest

from fairl.data.planted import PlantedConfig, make_planted
from fairl.pairs import Pairs
from fairl.reference import bradley_terry_relabel, oracle_starc


@pytest.fixture(scope="module")
def noisy_world():
    return make_planted(PlantedConfig(n_train=2000, n_test=300, d=16, label_noise=0.3, seed=3))


def test_oracle_starc_is_near_zero_when_r_star_is_linear():
    world = make_planted(PlantedConfig(n_train=1000, n_test=300, d=16, near_tie_frac=0.2))
    fit = oracle_starc(world.train, world.test)
    assert fit.starc < 0.02
    theta = world.info["theta_star"]
    assert fit.coef @ theta / np.linalg.norm(fit.coef) > 0.999


def test_oracle_starc_of_a_nonlinear_reward_is_positive_and_uses_train_only():
    rng = np.random.default_rng(0)

    def reward(h):
        return np.sin(2 * h[:, 0]) + h[:, 1] ** 2

    def pairs(n):
        h_T, h_NT = rng.standard_normal((2, n, 8)).astype(np.float32)
        return Pairs(h_T=h_T, h_NT=h_NT, gt_T=reward(h_T), gt_NT=reward(h_NT),
                     prompt_ids=np.arange(n) // 2)

    train, test, other = pairs(500), pairs(200), pairs(200)
    fit = oracle_starc(train, test)
    assert 0.2 < fit.starc < 0.8
    assert oracle_starc(train, other).alpha == fit.alpha  # α never sees the test pairs


def test_bradley_terry_with_tiny_beta_orders_every_pair_by_r_star(noisy_world):
    train = noisy_world.train
    assert np.mean(train.gt_T < train.gt_NT) > 0.25  # label noise left many pairs misordered
    for beta in (0.0, 1e-9):
        new = bradley_terry_relabel(train, rng=1, beta=beta)
        assert np.all(new.gt_T >= new.gt_NT)
        assert np.array_equal(new.swapped, train.gt_T < train.gt_NT)
        np.testing.assert_array_equal(new.h_T[new.swapped], train.h_NT[new.swapped])
        np.testing.assert_array_equal(new.h_NT[~new.swapped], train.h_NT[~new.swapped])


def test_bradley_terry_with_large_beta_flips_about_half(noisy_world):
    new = bradley_terry_relabel(noisy_world.train, rng=np.random.default_rng(2), beta=1e6)
    assert 0.45 < new.swapped.mean() < 0.55


def test_bradley_terry_default_beta_matches_the_logistic_rate_and_is_deterministic(noisy_world):
    train = noisy_world.train
    new = bradley_terry_relabel(train, rng=5)
    ordered = new.gt_T > new.gt_NT
    gap = np.abs(train.gt_T - train.gt_NT)
    expected = np.mean(1 / (1 + np.exp(-gap / 0.25)))  # P(r*-preferred output is aligned)
    assert ordered.mean() == pytest.approx(expected, abs=0.03)
    again = bradley_terry_relabel(train, rng=5)
    assert np.array_equal(new.swapped, again.swapped)
    assert np.array_equal(train.h_T, noisy_world.train.h_T)  # inputs untouched


def test_reference_rejects_worlds_without_r_star_and_negative_beta(noisy_world):
    bare = Pairs(h_T=np.zeros((3, 2), np.float32), h_NT=np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="no true reward"):
        oracle_starc(bare, noisy_world.test)
    with pytest.raises(ValueError, match="no true reward"):
        bradley_terry_relabel(bare, rng=0)
    with pytest.raises(ValueError, match="beta"):
        bradley_terry_relabel(noisy_world.train, rng=0, beta=-1.0)
