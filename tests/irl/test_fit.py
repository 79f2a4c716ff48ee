import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fairl.data.planted import PlantedConfig, make_planted
from fairl.irl import FitConfig, FitDiverged, FitResult, fa_irl_loss, fit
from fairl.irl.fit import difference_matrix, init_heads
from fairl.metrics import evaluate_reward

STANDARD = {"failure_mode": "none", "dual_path": False}
FA_IRL = {"failure_mode": "margin", "dual_path": True}
REFERENCE = Path(__file__).parent / "data" / "fit_reference.npz"  # make_fit_reference.py
with np.load(REFERENCE) as _data:
    REFERENCE_META = json.loads(str(_data["meta"]))


@pytest.fixture(scope="module")
def clean_world():
    return make_planted(PlantedConfig(n_train=4000, n_test=2000, d=64, seed=0))


def _batch(seed=0, n=50, d=8):
    rng = np.random.default_rng(seed)
    diffs = torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32))
    weights = init_heads(d, 2, torch.Generator().manual_seed(seed))[0].requires_grad_()
    return diffs, weights


def _loss(diffs, weights, config, **kw):
    args = {"gamma": 0.5, "lam": 10.0, "p": 1.0, "gt_margins": None, "generator": torch.Generator()}
    args.update(kw)
    return fa_irl_loss(diffs, weights, config, **args)


def test_failure_head_gets_no_gradient_from_the_base_loss():
    diffs, weights = _batch()
    terms = _loss(diffs, weights, FitConfig(**FA_IRL))
    terms.base.backward()
    assert torch.all(weights.grad[1] == 0)
    assert weights.grad[0].abs().sum() > 0


def test_loss_terms_hand_computed():
    diffs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    weights = torch.tensor([[0.5, 0.2], [0.1, -0.4]], requires_grad=True)
    # margins R = R_D + R_F: [0.6, -0.2, -0.6]; failures below γ=0: pairs 1 and 2
    config = FitConfig(M=1.0, M_fail=2.0, l2_fail=0.1)
    terms = _loss(diffs, weights, config, gamma=0.0, lam=3.0, p=1.0)
    assert terms.failure_mask.tolist() == [False, True, True]
    assert terms.base.item() == pytest.approx((0.4 + 1.2 + 1.6) / 3)
    assert terms.fail.item() == pytest.approx((2.2 + 2.6) / 2)
    assert terms.l2.item() == pytest.approx(0.1 * (0.01 + 0.16))
    assert terms.total.item() == pytest.approx(terms.base.item() + 3 * 2.4 + 0.017)


def test_failure_loss_moves_only_the_failure_head_by_default():
    diffs, weights = _batch()
    terms = _loss(diffs, weights, FitConfig(**FA_IRL))
    assert len(terms.sampled) > 0
    terms.fail.backward()
    assert torch.all(weights.grad[0] == 0)
    assert weights.grad[1].abs().sum() > 0


def test_fail_grad_to_base_lets_the_failure_loss_move_both_heads():
    diffs, weights = _batch()
    terms = _loss(diffs, weights, FitConfig(**FA_IRL, fail_grad_to_base=True))
    terms.fail.backward()
    assert weights.grad[0].abs().sum() > 0 and weights.grad[1].abs().sum() > 0


def test_without_failures_theta_F_changes_only_by_its_l2_term():
    rng = np.random.default_rng(1)
    h_T, h_NT = rng.standard_normal((200, 16)), rng.standard_normal((200, 16))
    lr, alpha, rounds = 0.1, 0.05, 3
    config = FitConfig(failure_mode="none", dual_path=True, optimizer="sgd", lr=lr,
                       l2_fail=alpha, rounds=rounds, seed=4)
    result = fit(h_T, h_NT, config)
    theta_F0 = init_heads(16, 2, torch.Generator().manual_seed(4))[0][1].numpy()
    # SGD on α‖θ‖²: θ <- θ (1 - 2 lr α) each round, nothing else
    np.testing.assert_allclose(result.theta_F, theta_F0 * (1 - 2 * lr * alpha) ** rounds, rtol=1e-5)
    assert all(record["n_sampled"] == 0 for record in result.history)


def test_ground_truth_mode_finds_failures_from_r_star(clean_world):
    train = clean_world.train
    config = FitConfig(failure_mode="ground_truth", rounds=5)
    result = fit(train.h_T, train.h_NT, config, train.gt_T, train.gt_NT)
    assert result.history[0]["n_failures"] > 0
    with pytest.raises(ValueError, match="gt_T"):
        fit(train.h_T, train.h_NT, config)


@pytest.mark.parametrize("objective", ["max_margin", "max_entropy"])
@pytest.mark.parametrize("method", [STANDARD, FA_IRL], ids=["standard", "fa_irl"])
def test_recovers_the_planted_reward(clean_world, objective, method):
    train = clean_world.train
    result = fit(train.h_T, train.h_NT, FitConfig(objective=objective, **method))
    metrics = evaluate_reward(result.reward, clean_world.test)
    assert metrics["starc"] < 0.05
    assert metrics["pairwise_accuracy"] > 0.97


def test_bit_identical_for_the_same_seed(clean_world):
    train = clean_world.train.subset(np.arange(1000))
    config = FitConfig(rounds=20, batch_size=256, seed=3)
    first, second = fit(train.h_T, train.h_NT, config), fit(train.h_T, train.h_NT, config)
    assert np.array_equal(first.reward(train.h_T), second.reward(train.h_T))
    assert first.history == second.history
    other = fit(train.h_T, train.h_NT, FitConfig(rounds=20, batch_size=256, seed=4))
    assert not np.array_equal(first.reward(train.h_T), other.reward(train.h_T))


def test_read_only_pairs_build_D_once_and_fit_as_writeable_ones(clean_world):
    train = clean_world.train.subset(np.arange(400))
    copies = train.h_T.copy(), train.h_NT.copy()  # writeable: a new D every call
    assert difference_matrix(*copies) is not difference_matrix(*copies)
    frozen = train.freeze()
    assert not frozen.h_T.flags.writeable
    first = difference_matrix(frozen.h_T, frozen.h_NT)
    assert difference_matrix(frozen.h_T, frozen.h_NT) is first
    assert torch.equal(first, torch.from_numpy(copies[0] - copies[1]))
    config = FitConfig(rounds=15, seed=2)
    reused, built = fit(frozen.h_T, frozen.h_NT, config), fit(*copies, config)
    assert np.array_equal(reused.theta_D, built.theta_D)
    assert np.array_equal(reused.theta_F, built.theta_F) and reused.history == built.history
    with pytest.raises(ValueError, match="read-only"):
        frozen.h_T[0, 0] = 1.0  # what would make a kept D stale cannot happen by accident
    # Other arrays with the same values are other pairs: never served the kept D.
    other = train.subset(np.arange(400)).freeze()
    assert difference_matrix(other.h_T, other.h_NT) is not first


def test_history_has_a_record_per_round(clean_world):
    train = clean_world.train.subset(np.arange(500))
    result = fit(train.h_T, train.h_NT, FitConfig(rounds=7))
    assert [r["round"] for r in result.history] == list(range(7))
    assert {"loss", "loss_base", "loss_fail", "loss_l2", "n_failures", "n_sampled", "gamma",
            "lam", "p", "margin_mean", "margin_min"} <= set(result.history[0])
    assert result.history[0]["p"] == pytest.approx(0.2) and result.history[-1]["p"] == 0.0
    assert result.failure_counts.shape == (500,)
    assert result.failure_counts.sum() == sum(r["n_failures"] for r in result.history)


def test_scaled_lambda_decay_spreads_the_decay_over_the_rounds(clean_world):
    """lambda_decay_scaled: λ_t decays per 100 / rounds rounds, so 25 rounds end where 100 do."""
    train = clean_world.train.subset(np.arange(300))
    config = FitConfig(rounds=25, lambda0=10.0, lambda_decay=0.05)
    plain = fit(train.h_T, train.h_NT, config).history
    scaled = fit(train.h_T, train.h_NT, FitConfig(**{**config.__dict__,
                                                     "lambda_decay_scaled": True})).history
    assert plain[-1]["lam"] == pytest.approx(10.0 * np.exp(-0.05 * 24), rel=1e-6)
    assert scaled[-1]["lam"] == pytest.approx(10.0 * np.exp(-0.05 * 4 * 24), rel=1e-6)


def test_reward_is_the_sum_of_the_two_paths(clean_world):
    train = clean_world.train.subset(np.arange(300))
    result = fit(train.h_T, train.h_NT, FitConfig(rounds=5))
    h = clean_world.test.h_T[:10]
    # one product h (θ_D + θ_F) against two: equal to float32 rounding of rewards of order 1
    np.testing.assert_allclose(result.reward(h), result.reward_D(h) + result.reward_F(h),
                               rtol=1e-6, atol=1e-6)
    standard = fit(train.h_T, train.h_NT, FitConfig(rounds=5, **STANDARD))
    assert np.all(standard.reward_F(h) == 0) and standard.theta_F is None


def test_save_and_load_round_trip(tmp_path, clean_world):
    train = clean_world.train.subset(np.arange(300))
    result = fit(train.h_T, train.h_NT, FitConfig(rounds=5, objective="max_entropy"))
    loaded = FitResult.load(result.save(tmp_path / "heads.npz"))
    h = clean_world.test.h_T[:10]
    assert np.array_equal(loaded.reward(h), result.reward(h))
    assert loaded.config == result.config and loaded.history == result.history


def test_divergence_raises_a_readable_error():
    rng = np.random.default_rng(0)
    h_T, h_NT = rng.standard_normal((50, 4)) * 1e18, rng.standard_normal((50, 4)) * 1e18
    config = FitConfig(objective="max_entropy", optimizer="sgd", lr=1e30, rounds=10, **STANDARD)
    with pytest.raises(FitDiverged, match="round"):
        fit(h_T, h_NT, config)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="must both be"):
        fit(np.zeros((3, 2)), np.zeros((3, 3)), FitConfig())
    with pytest.raises(ValueError, match="NaN"):
        fit(np.full((3, 2), np.nan), np.zeros((3, 2)), FitConfig())


@pytest.mark.parametrize("config", [
    {}, {"objective": "max_entropy"}, {"fail_grad_to_base": True},
    {"failure_mode": "ground_truth"}, {"dual_path": False},
    {"objective": "max_entropy", "dual_path": False}, {"failure_mode": "none"},
    {"failure_budget": "of_batch", "failure_sampling": "hardest"},
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_hand_gradient_is_the_autograd_gradient_of_fa_irl_loss(config):
    """One round of SGD with lr 1 moves the heads by exactly -∂L_0/∂θ: fit's hand-applied
    gradient, against autograd's of fa_irl_loss with the same draws."""
    rng = np.random.default_rng(0)
    h_T, h_NT = rng.standard_normal((2, 200, 8)).astype(np.float32)
    gt_T, gt_NT = rng.standard_normal((2, 200)).astype(np.float32)
    config = FitConfig(**config, optimizer="sgd", lr=1.0, rounds=1, p0=0.5, lambda0=3.0,
                       gamma_start=0.5, gamma_end=0.5, seed=2)
    generator = torch.Generator().manual_seed(2)
    weights = init_heads(8, 2 if config.dual_path else 1, generator)[0].requires_grad_()
    diffs = torch.from_numpy(h_T - h_NT)
    terms = fa_irl_loss(diffs, weights, config, gamma=0.5, lam=3.0, p=0.5,
                        gt_margins=torch.from_numpy(gt_T - gt_NT), generator=generator)
    terms.total.backward()
    result = fit(h_T, h_NT, config, gt_T, gt_NT)
    record = result.history[0]
    assert record["n_sampled"] == len(terms.sampled)
    assert (record["n_sampled"] == 0) == (config.failure_mode == "none")
    assert record["n_failures"] == int(terms.failure_mask.sum())
    assert np.array_equal(result.failure_counts, terms.failure_mask.numpy())
    for key, value in (("loss", terms.total), ("loss_base", terms.base),
                       ("loss_fail", terms.fail), ("loss_l2", terms.l2)):
        assert record[key] == pytest.approx(value.item(), rel=1e-6, abs=1e-7), key
    moved = weights.detach().numpy()[0] - result.theta_D
    np.testing.assert_allclose(moved, weights.grad[0].numpy(), rtol=1e-5, atol=1e-6)
    if config.dual_path:
        moved = weights.detach().numpy()[1] - result.theta_F
        np.testing.assert_allclose(moved, weights.grad[1].numpy(), rtol=1e-5, atol=1e-6)


def _close_to(actual, desired, what):
    """Within 1e-5 of the array's largest magnitude (why: test_fit_reproduces_...)."""
    desired = np.asarray(desired)
    scale = np.abs(desired).max() if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=0, atol=1e-5 * max(scale, 1e-3),
                               err_msg=what)


@pytest.mark.parametrize("name", list(REFERENCE_META["configs"]))
def test_fit_reproduces_the_stored_reference(name):
    """fit() returns what the two-pass autograd fit of commit 8df9269 returned.

    Tolerance 1e-5 of each array's largest magnitude, not bit-identity, for float32
    summation order: the summed-heads forward D (θ_D + θ_F) rounds differently from
    D θ_D + D θ_F, and MKL's matrix-vector products sum in a thread-count-dependent order.
    Measured over these 40-round fits: the old fit itself moved up to 8e-7 of max |θ| between
    1 and 2 threads; the new one is within 1.0e-6 of the reference at 1 or 2 threads, and
    bit-identical at 1 thread for the one-head paths, whose arithmetic did not change. Two
    deliberate bugs tried (fail_grad_to_base ignored; L2 gradient 1.9αθ instead of 2αθ)
    moved θ by 1.0 and 0.2 and failed it.

    Failure counts and |S_t|: within one pair in 1 000 per round, and the per-pair counts
    within one round per 1 000 pairs in all. A pair whose margin lies within float32 rounding
    of τ_fail counts either way with the CPU's BLAS kernels: on an AMD EPYC (2026-12-02) one
    pair of fa_irl_of_batch_hardest flipped in one round (835 vs 836 of 2 000), θ within
    3.5e-7 of the reference; the reference was made on an Intel CPU. A 2 % larger τ_fail
    moved 26-89 pairs a round in the configs it enters.
    """
    meta, key = REFERENCE_META, lambda field: f"{name}/{field}"
    train = make_planted(PlantedConfig(**meta["world"])).train
    config = FitConfig(rounds=meta["rounds"], **meta["configs"][name])
    result = fit(train.h_T, train.h_NT, config, train.gt_T, train.gt_NT)
    with np.load(REFERENCE) as ref:
        _close_to(result.theta_D, ref[key("theta_D")], "theta_D")
        if config.dual_path:
            _close_to(result.theta_F, ref[key("theta_F")], "theta_F")
        else:
            assert result.theta_F is None and ref[key("theta_F")].size == 0
        assert np.array_equal([result.b_D, result.b_F], ref[key("biases")])
        for field in ("loss", "loss_base", "loss_fail", "loss_l2", "margin_mean", "margin_min"):
            _close_to([r[field] for r in result.history], ref[key(field)], field)
        slack = max(1, len(train.h_T) // 1000)  # pairs a round may count otherwise (above)
        for field in ("n_failures", "n_sampled"):
            ours = np.array([r[field] for r in result.history])
            assert np.abs(ours - ref[key(field)]).max() <= slack, (field, ours, ref[key(field)])
        counts = result.failure_counts.astype(np.int64) - ref[key("failure_counts")]
        assert np.abs(counts).sum() <= slack, np.flatnonzero(counts)
