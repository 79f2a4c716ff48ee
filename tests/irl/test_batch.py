"""fit_many: each head of a batched fit is its own unbatched fit (to float32 rounding)."""

import numpy as np
import pytest

from fairl.data.planted import PlantedConfig, make_planted
from fairl.irl import FitConfig, FitDiverged, batch, fit, fit_many
from fairl.irl.ops import NumpyOps, TorchOps

# Both objectives, every failure mode, both budgets and samplings, the optimisers, minibatches.
HEADS = [
    {"failure_mode": "none", "dual_path": False},
    {},
    {"seed": 1},
    {"failure_mode": "ground_truth", "objective": "max_entropy", "seed": 2},
    {"failure_mode": "ensemble", "ensemble_size": 3},
    {"objective": "max_entropy", "gamma_shape": "cosine", "fail_grad_to_base": True},
    {"dual_path": False, "failure_mode": "ground_truth", "optimizer": "adamw"},
    {"failure_budget": "of_batch", "failure_sampling": "hardest", "lambda_fixed": True},
    {"optimizer": "sgd", "lr": 0.1, "M_fail": 3.0, "rounds": 12},
    {"batch_size": 300, "seed": 3},
]


@pytest.fixture(scope="module")
def train():
    return make_planted(PlantedConfig(n_train=1000, n_test=2, d=16, label_noise=0.1,
                                      near_tie_frac=0.1, hard_frac=0.1, seed=5)).train


def _configs():
    return [FitConfig(**{"rounds": 20, **head}) for head in HEADS]


def _same(batched, alone, what):
    """Heads within 1e-5 of max |θ|, the fit reference's tolerance (tests/irl/test_fit.py);
    failure counts within one pair in 1 000 per round (float ties at γ_t)."""
    for name in ("theta_D", "theta_F"):
        ours, theirs = getattr(batched, name), getattr(alone, name)
        if theirs is None:
            assert ours is None, what
            continue
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max(),
                                   err_msg=f"{what} {name}")
    assert [batched.b_D, batched.b_F] == [alone.b_D, alone.b_F]
    slack = max(1, len(alone.failure_counts) // 1000)
    for field in ("n_failures", "n_sampled"):
        ours = np.array([r[field] for r in batched.history])
        theirs = np.array([r[field] for r in alone.history])
        assert np.abs(ours - theirs).max() <= slack, (what, field)
    for field in ("loss", "loss_base", "loss_fail", "margin_mean", "margin_min"):
        ours = np.array([r[field] for r in batched.history])
        theirs = np.array([r[field] for r in alone.history])
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * max(np.abs(theirs).max(),
                                                                       1e-3), err_msg=field)
    assert np.abs(batched.failure_counts - alone.failure_counts).sum() <= slack


def test_each_head_of_a_batched_fit_is_its_unbatched_fit(train):
    configs = _configs()
    batched = fit_many(train.h_T, train.h_NT, configs, train.gt_T, train.gt_NT)
    for head, config, outcome in zip(HEADS, configs, batched):
        alone = fit(train.h_T, train.h_NT, config, train.gt_T, train.gt_NT)
        assert outcome.config == config
        _same(outcome, alone, head)
        assert len(outcome.history) == config.rounds


def test_the_torch_path_gives_the_numpy_paths_numbers(train):
    """TorchOps (what a GPU runs) on the CPU: the same heads as NumpyOps."""
    configs = _configs()
    numpy_heads = fit_many(train.h_T, train.h_NT, configs, train.gt_T, train.gt_NT)
    torch_heads = fit_many(train.h_T, train.h_NT, configs, train.gt_T, train.gt_NT,
                           ops=TorchOps)
    for head, ours, theirs in zip(HEADS, torch_heads, numpy_heads):
        _same(ours, theirs, head)


# Hinge heads that reach few active pairs on a separable world, with every kind of failure
# row (small and large S_t, into θ_F or θ_D) and, in a batch, a max-entropy head beside them.
SPARSE_HEADS = [
    {"failure_mode": "none", "dual_path": False},
    {},
    {"failure_mode": "ground_truth", "seed": 1},
    {"fail_grad_to_base": True},
    {"dual_path": False},  # reweighting: the failure gradient moves θ_D alone
    {"failure_budget": "of_batch", "failure_sampling": "hardest", "p0": 1.0, "p_end": 1.0},
    {"batch_size": 500, "seed": 2},
    {"objective": "max_entropy"},
]


class _DenseOps(NumpyOps):
    """NumpyOps with the backward product always over every row."""

    @staticmethod
    def sparse_share(heads: int) -> float:
        return 0.0


@pytest.fixture
def sparse_steps(monkeypatch):
    """The outcomes of _Pass._sparse_backward (True: the product ran on the gathered rows)."""
    taken, real = [], batch._Pass._sparse_backward

    def spy(self, *args):
        taken.append(real(self, *args))
        return taken[-1]

    monkeypatch.setattr(batch._Pass, "_sparse_backward", spy)
    return taken


@pytest.mark.parametrize("heads", ["alone", "batched"])
def test_the_backward_on_the_hinges_active_rows_gives_the_dense_numbers(heads, sparse_steps):
    """On a separable world the hinge heads' backward runs on the rows they need (tried:
    sparse_share's branch taken), and every head equals the all-rows product's."""
    train = make_planted(PlantedConfig(n_train=2000, n_test=2, d=64, seed=5)).train
    configs = [FitConfig(rounds=40, lr=0.2, **head) for head in SPARSE_HEADS]
    groups = [[c] for c in configs] if heads == "alone" else [configs]
    for group in groups:
        before = len(sparse_steps)
        ours = fit_many(train.h_T, train.h_NT, group, train.gt_T, train.gt_NT)
        if group[0].objective == "max_margin":
            assert sum(sparse_steps[before:]) >= 10, group  # of 40 (160 minibatch) steps
        dense = fit_many(train.h_T, train.h_NT, group, train.gt_T, train.gt_NT, ops=_DenseOps)
        for config, a, b in zip(group, ours, dense):
            _same(a, b, config)


class _StopAt:
    """A monitor that raises at round `at` (as a pruned trial's does) and records its calls."""

    every = 5

    def __init__(self, at: int | None):
        self.at, self.seen = at, []

    def __call__(self, t, result):
        self.seen.append(t)
        if t == self.at:
            raise RuntimeError(f"stopped at {t}")


def test_a_head_its_monitor_stops_does_not_stop_the_others(train):
    configs = [FitConfig(rounds=20, seed=s) for s in range(3)]
    monitors = [_StopAt(None), _StopAt(9), None]
    outcomes = fit_many(train.h_T, train.h_NT, configs, monitors=monitors)
    assert isinstance(outcomes[1], RuntimeError) and str(outcomes[1]) == "stopped at 9"
    assert monitors[1].seen == [4, 9]
    assert monitors[0].seen == [4, 9, 14]  # not after the last round
    for index in (0, 2):
        _same(outcomes[index], fit(train.h_T, train.h_NT, configs[index]), index)


def test_a_diverging_head_ends_alone_with_its_round(train):
    wild = FitConfig(objective="max_entropy", optimizer="sgd", lr=1e30, rounds=10,
                     failure_mode="none", dual_path=False)
    calm = FitConfig(rounds=10, seed=4)
    h_T, h_NT = train.h_T * 1e18, train.h_NT * 1e18
    outcomes = fit_many(h_T, h_NT, [wild, calm])
    assert isinstance(outcomes[0], FitDiverged) and "at round" in str(outcomes[0])
    _same(outcomes[1], fit(h_T, h_NT, calm), "calm")


def test_heads_of_one_pass_share_a_device(train):
    with pytest.raises(ValueError, match="share a device"):
        fit_many(train.h_T, train.h_NT, [FitConfig(), FitConfig(device="auto")])
