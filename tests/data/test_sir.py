"""The SIR world (fairl.data.sir): SIR picks o_T with π* ∝ exp(r*/β) (or π_k for k candidates),
its pairs are Bradley–Terry in r*/β, r* is exactly linear in h, and composition stays exact."""

import re

import numpy as np
import pytest
from scipy.stats import chi2, chisquare

from fairl.config import ConfigError
from fairl.data.compose import compose_pairs, n_tnt_for
from fairl.data.sir import (
    SPLITS,
    SirOptions,
    SplitSamples,
    kl_to_uniform,
    sir_draw,
    sir_probabilities,
    sir_world,
    world_summary,
)
from fairl.reference import oracle_starc
from fairl.worlds import check_world_options

REWARDS = np.array([0.0, 1.0, 2.0, -1.0, 0.5])
BETA = 0.7
DRAWS = 40_000


def _counts(indices: np.ndarray, K: int) -> np.ndarray:
    return np.bincount(indices.ravel(), minlength=K)


def test_sir_over_the_whole_pool_picks_o_T_from_pi_star():
    chosen, other = sir_draw(REWARDS[None, :], BETA, None, DRAWS, np.random.default_rng(0))
    expected = np.exp(REWARDS / BETA) / np.exp(REWARDS / BETA).sum()
    assert chisquare(_counts(chosen, 5), DRAWS * expected).pvalue > 1e-3
    assert np.all(chosen != other)
    # o_NT is uniform on the rest of the pool: its marginal is Σ_a π*(a)(1 − [b = a])/(K − 1)
    marginal_NT = (1 - expected) / 4
    assert chisquare(_counts(other, 5), DRAWS * marginal_NT).pvalue > 1e-3


def test_sir_with_k_candidates_follows_the_enumerated_pi_k_not_pi_star():
    chosen, _ = sir_draw(REWARDS[None, :], BETA, 2, DRAWS, np.random.default_rng(1))
    pi_k = sir_probabilities(REWARDS, BETA, 2)
    pi_star = sir_probabilities(REWARDS, BETA, None)
    assert np.isclose(pi_k.sum(), 1.0)
    assert chisquare(_counts(chosen, 5), DRAWS * pi_k).pvalue > 1e-3
    assert chisquare(_counts(chosen, 5), DRAWS * pi_star).pvalue < 1e-6  # k matters
    assert np.allclose(sir_probabilities(REWARDS, BETA, 1), 0.2)  # one candidate: π_base
    assert kl_to_uniform(sir_probabilities(REWARDS, BETA, 1)) == pytest.approx(0.0, abs=1e-12)
    assert 0 < kl_to_uniform(pi_k) < kl_to_uniform(pi_star) < np.log(5)


def test_pairs_are_bradley_terry_in_r_over_beta():
    """P(o_T = a | the pair is {a, b}) = σ((r*(a) − r*(b))/β) when SIR uses the whole pool."""
    rewards = np.array([[0.0, 1.5, -0.5]])
    chosen, other = sir_draw(rewards, 0.8, None, DRAWS, np.random.default_rng(2))
    pair = {frozenset((0, 1)): (0, 1)}
    for members, (a, b) in pair.items():
        mask = np.isin(chosen, list(members)) & np.isin(other, list(members))
        a_won = np.sum(mask & (chosen == a))
        p = 1 / (1 + np.exp(-(rewards[0, a] - rewards[0, b]) / 0.8))
        assert chisquare([a_won, mask.sum() - a_won], mask.sum() * np.array([p, 1 - p])).pvalue \
            > 1e-3


def _samples(seed: int = 0, d: int = 6, bend: float = 0.0) -> dict[str, SplitSamples]:
    """Synthetic splits: prompts with 5 or 2 base samples, a judge logit linear in h + noise
    (+ bend·(h₀² − 1): a part no linear head holds)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    samples, code = {}, 0
    for split, n_prompts in zip(SPLITS, (120, 40, 40)):
        sizes = np.where(rng.random(n_prompts) < 0.5, 5, 2)
        codes = np.repeat(np.arange(code, code + n_prompts), sizes)
        code += n_prompts
        m = len(codes)
        h_T, h_NT = rng.standard_normal((m, d)), rng.standard_normal((m, d)) - 0.3 * w
        judge_T = h_T @ w + 2 + 0.3 * rng.standard_normal(m) + bend * (h_T[:, 0] ** 2 - 1)
        judge_NT = h_NT @ w + 2 + 0.3 * rng.standard_normal(m) + bend * (h_NT[:, 0] ** 2 - 1)
        samples[split] = SplitSamples(
            h_T=h_T.astype(np.float32), h_NT=h_NT.astype(np.float32), judge_T=judge_T,
            judge_NT=judge_NT, prompt_codes=codes.astype(np.int64),
            text_T=[f"{split} aligned {i}" for i in range(m)],
            text_NT=[f"{split} base {i}" for i in range(m)],
            prompts=[f"prompt {c}" for c in codes])
    return samples


def _world(bend: float = 0.0, **options):
    return sir_world(_samples(bend=bend), SirOptions(**options),
                     source={"pairset": "toy", "pairset_hash": "sha256:toy", "encoder": "toy"})


def _bradley_terry_statistic(pairs, reward_of, beta: float, bins: int = 8) -> float:
    """p of Σ_bins (O − E)² / V: does o_T win each unordered pair {a, b} with probability
    σ((r(a) − r(b))/β)? (a = the pair's first text in sort order; bins by that probability)."""
    first_is_T = np.array([t < nt for t, nt in zip(pairs.text_T, pairs.text_NT)])
    a = np.where(first_is_T, pairs.text_T, pairs.text_NT)
    b = np.where(first_is_T, pairs.text_NT, pairs.text_T)
    gap = np.array([reward_of[x] - reward_of[y] for x, y in zip(a, b)])
    p = 1 / (1 + np.exp(-gap / beta))
    edges = np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.searchsorted(edges, p)
    statistic = sum((first_is_T[which == k].sum() - p[which == k].sum()) ** 2
                    / (p[which == k] * (1 - p[which == k])).sum() for k in range(bins))
    return float(chi2.sf(statistic, bins))


def test_misspecified_pairs_are_bradley_terry_in_the_new_r_star_not_in_the_probe():
    """m = 1: r* is the judge's logit, o_T still ~ π* ∝ exp(r*/β), so pairs are BT in r*/β."""
    samples, beta = _samples(bend=1.5), 0.5
    world = sir_world(samples, SirOptions(beta=beta, pairs_per_prompt=64, misspecification=1.0),
                      source={"pairset": "toy"})
    judge = {text: value for split in SPLITS for text, value in
             zip(samples[split].text_NT, samples[split].judge_NT)}
    assert np.allclose(world.train.gt_T, [judge[text] for text in world.train.text_T])
    assert _bradley_terry_statistic(world.train, judge, beta) > 1e-3
    w, b = world.info["probe_w"], world.info["probe_b"]
    probe = {text: float(h @ w + b) for split in SPLITS for text, h in
             zip(samples[split].text_NT, samples[split].h_NT.astype(np.float64))}
    assert _bradley_terry_statistic(world.train, probe, beta) < 1e-6  # m changed the draws


def test_r_star_mixes_probe_and_judge_and_the_oracle_shows_it():
    samples = _samples(bend=1.5)
    halfway = sir_world(samples, SirOptions(beta=0.5, misspecification=0.5), {"pairset": "toy"})
    judge = {text: value for split in SPLITS for text, value in
             zip(samples[split].text_NT, samples[split].judge_NT)}
    w, b = halfway.info["probe_w"], halfway.info["probe_b"]
    linear = halfway.test.h_T.astype(np.float64) @ w + b
    expected = 0.5 * linear + 0.5 * np.array([judge[text] for text in halfway.test.text_T])
    assert np.allclose(halfway.test.gt_T, expected, atol=1e-5)
    oracle = {m: oracle_starc(world.train, world.test).starc
              for m, world in ((m, _world(bend=1.5, beta=0.5, misspecification=m))
                               for m in (0.0, 0.5, 1.0))}
    assert oracle[0.0] < 1e-3 and 0.05 < oracle[0.5] < oracle[1.0]
    printed = {m: float(re.search(r"oracle linear STARC .*: ([0-9.]+)",
                                  world_summary(_world(bend=1.5, beta=0.5, misspecification=m)))
                        .group(1)) for m in (0.0, 1.0)}
    assert printed[0.0] < 1e-3 and printed[1.0] == pytest.approx(oracle[1.0], abs=1e-4)
    assert _world().dataset_hash == _world(misspecification=0.0).dataset_hash
    assert _world().dataset_hash != _world(misspecification=1.0).dataset_hash
    # r*'s identity: another β draws other pairs from the same r*, another m changes r*
    reward = {key: _world(**options).info["reward_id"] for key, options in
              (("base", {}), ("beta", {"beta": 2.0}), ("m", {"misspecification": 1.0}))}
    assert reward["base"] == reward["beta"] != reward["m"]


def test_the_probe_reward_is_exactly_linear_in_h_and_the_oracle_reaches_it():
    world = _world(beta=0.5)
    w, b = world.info["probe_w"], world.info["probe_b"]
    for pairs in (world.train, world.validation, world.test):
        h = np.concatenate([pairs.h_T, pairs.h_NT]).astype(np.float64)
        gt = np.concatenate([pairs.gt_T, pairs.gt_NT])
        assert np.allclose(h @ w + b, gt, atol=1e-5)
    assert oracle_starc(world.train, world.test).starc < 1e-3
    held_out = world.info["probe"]["held_out_aligned"]
    assert held_out["spearman"] > 0.8  # the toy judge is linear up to noise 0.3


def test_pairs_come_from_one_prompts_pool_and_splits_do_not_share_prompts():
    world = _world(pairs_per_prompt=3)
    samples = _samples()
    base_texts = {split: set(samples[split].text_NT) for split in SPLITS}
    for split, pairs in zip(SPLITS, (world.train, world.validation, world.test)):
        assert set(pairs.text_T) | set(pairs.text_NT) <= base_texts[split]
        assert all(t != nt for t, nt in zip(pairs.text_T, pairs.text_NT))
        assert len(pairs) == 3 * len(np.unique(samples[split].prompt_codes))
    assert not set(world.train.prompt_ids) & set(world.test.prompt_ids)


def test_label_noise_swaps_training_pairs_only():
    clean, noisy = _world(seed=3), _world(seed=3, label_noise=0.3)
    assert np.array_equal(clean.test.h_T, noisy.test.h_T)
    assert np.array_equal(clean.validation.h_NT, noisy.validation.h_NT)
    swapped = np.all(clean.train.h_T == noisy.train.h_NT, axis=1)
    assert 0.2 < swapped.mean() < 0.4
    assert np.array_equal(np.all(clean.train.h_T == noisy.train.h_T, axis=1), ~swapped)


def test_kl_falls_with_beta():
    kls = [_world(beta=beta).info["kl"]["mean"] for beta in (0.25, 1.0, 4.0)]
    assert kls[0] > kls[1] > kls[2] > 0


def test_composition_still_hits_exact_counts():
    world = _world(pairs_per_prompt=8)
    assert world.train.tnt.sum() >= 45
    for n, fraction in ((200, 0.2), (101, 0.25), (150, 0.0)):
        composed = compose_pairs(world.train, n, fraction, seed=7)
        assert len(composed) == n
        assert int(composed.tnt.sum()) == n_tnt_for(n, fraction)


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match=r"^world.options.beta: "):
        check_world_options("sir", {"beta": 0}, "world.options")
    with pytest.raises(ConfigError, match=r"world.options.misspecification"):
        check_world_options("sir", {"misspecification": 1.5}, "world.options")
    with pytest.raises(ConfigError, match=r"world.options.judge"):
        check_world_options("sir", {"judge": "roberta"}, "world.options")
    with pytest.raises(ConfigError, match=r"world.options.path: no PairSet"):
        check_world_options("sir", {"path": "/nonexistent"}, "world.options")
