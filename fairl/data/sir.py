"""The SIR world: a representable r* and the KL-optimal aligned policy, built from shipped samples.

Ground truth. probe(o) = w*·h(o) + b*, a ridge probe on the world's encoder fitted to a judge's
reward logit clip(log((1 − p)/p), ±6) (fairl.data.scorers) on the *aligned* outputs o_T of
the PairSet's train split, a text pool the world never uses as an output: its pairs are made
of base outputs only. r* = (1 − m)·probe + m·judge, m = `misspecification`: at m = 0 (the
default) r* is exactly linear in h, so the reward class contains it; at m = 1 it is the
judge's own logit, which no linear head on the encoder holds (the linear oracle's STARC
measures how far; `fairl world info` prints it).

Policies. Every prompt x of the PairSet has a pool of K independent base samples o_NT
(K = 5 for toxic prompts, 2 for benign ones in the embedded world). π_base(·|x) := uniform on
that pool (the empirical base policy), and the KL-regularised optimum on it is
    π*(o|x) = exp(r*(o)/β) / Σ_pool exp(r*/β)     (π* ∝ π_base · exp(r*/β)).
o_T is drawn by sampling-importance-resampling: k distinct candidates drawn uniformly from the
pool, one kept with probability ∝ exp(r*/β). With k = K (the default) that is exactly π*; with
k < K it is π_k, a flattened π* (`sir_probabilities` gives it exactly, by enumerating the
candidate sets). o_NT is a uniform draw from the pool without o_T, so a pair {a, b} has
o_T = a with probability π*(a)/(π*(a) + π*(b)) = σ((r*(a) − r*(b))/β): Bradley–Terry in
r*/β exactly when k = K (a per-prompt constant log Z(x) drops out), and max-entropy IRL is
its maximum-likelihood fit.

Knobs (`SirOptions`, swept as world.options.*): β, k, pairs per prompt, label noise on the
training pairs, the judge, the misspecification m, the encoder, the draw seed. A pair is T→NT
when the judge calls o_NT toxic (toxicity >= 0.5, i.e. its logit <= 0) and o_T not, as in
every PairSet; the exact T→NT fraction at a given n is world.compose (fairl.data.compose).
Splits are the PairSet's (by prompt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from fairl.config import STRICT, Float, Int
from fairl.pairs import Pairs, World

SPLITS = ("train", "validation", "test")
PROBE_ALPHAS = np.logspace(-3, 3, 13)


@pydantic_dataclass(config=STRICT)
class SirOptions:
    """The SIR world's knobs (fairl.data.sir): alignment strength, candidates, size, noise."""

    beta: Float = Field(1.0, gt=0, le=100, description="β of π* ∝ π_base exp(r*/β); small β: "
                        "strong alignment (large KL)")
    k: Int | None = Field(None, ge=1, le=64, description="SIR candidates per draw (capped at the "
                          "prompt's pool size); null: the whole pool, exactly π*")
    pairs_per_prompt: Int = Field(4, ge=1, le=64, description="independent (o_T, o_NT) draws "
                                  "per prompt and split")
    label_noise: Float = Field(0.0, ge=0, le=0.5, description="fraction of training pairs "
                               "swapped (validation and test never)")
    judge: Literal["bilstm", "profanity"] = Field(
        "bilstm", description="judge r* is a probe of (its reward logit); also labels T→NT")
    misspecification: Float = Field(
        0.0, ge=0, le=1, description="m of r* = (1 − m)·probe + m·judge logit: 0 = linear in "
        "h (representable), 1 = the judge itself (no linear head holds it)")
    encoder: Literal["minilm", "base-meanpool"] = Field(
        "minilm", description="h(o); base-meanpool: the PairSet's base LM, mean-pooled (encodes "
        "every text on first use: minutes on a CPU)")
    path: str | None = Field(None, description="PairSet folder; default: the embedded world")
    seed: Int = Field(0, ge=0, description="seed of the SIR draws and the label noise")


# --- the math -----------------------------------------------------------------------------------

def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sir_probabilities(rewards: np.ndarray, beta: float, k: int | None = None) -> np.ndarray:
    """(..., K) exact probability that SIR with k distinct uniform candidates picks each pool
    member; k >= K (or None): π* = softmax(r*/β)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    K = rewards.shape[-1]
    if k is None or k >= K:
        return _softmax(rewards / beta)
    probs = np.zeros_like(rewards)
    subsets = list(itertools.combinations(range(K), k))
    for subset in subsets:  # each candidate set has probability 1 / C(K, k)
        index = list(subset)
        probs[..., index] += _softmax(rewards[..., index] / beta) / len(subsets)
    return probs


def kl_to_uniform(probs: np.ndarray) -> np.ndarray:
    """KL(π ‖ uniform on the pool) = Σ π log(K π), per row (nats)."""
    probs = np.asarray(probs, dtype=np.float64)
    K = probs.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(K * probs), 0.0)
    return terms.sum(axis=-1)


def sir_draw(rewards: np.ndarray, beta: float, k: int | None, draws: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SIR pairs from pools: (P, K) rewards -> (P, draws) pool indices of o_T and of o_NT.

    o_T: k distinct candidates uniformly (a random permutation's first k), one kept with
    probability ∝ exp(r*/β); o_NT: uniform on the pool without o_T.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    P, K = rewards.shape
    if K < 2:
        raise ValueError("a pool needs at least 2 samples (o_T and o_NT differ)")
    k = K if k is None else min(k, K)
    candidates = np.argsort(rng.random((P, draws, K)), axis=-1)[..., :k]  # (P, draws, k)
    scores = np.take_along_axis(np.broadcast_to(rewards[:, None, :], (P, draws, K)),
                                candidates, axis=-1) / beta
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    cumulative = np.cumsum(weights, axis=-1)
    u = rng.random((P, draws, 1)) * cumulative[..., -1:]
    position = np.minimum((cumulative < u).sum(axis=-1), k - 1)
    chosen = np.take_along_axis(candidates, position[..., None], axis=-1)[..., 0]
    other = rng.integers(0, K - 1, (P, draws))
    return chosen, other + (other >= chosen)


@dataclass(frozen=True)
class Probe:
    """r*(o) = w·h(o) + b, fitted by ridge (α by leave-one-out CV) to a judge's reward logit."""

    w: np.ndarray  # (d,)
    b: float
    alpha: float

    def __call__(self, h: np.ndarray) -> np.ndarray:
        return np.asarray(h, dtype=np.float64) @ self.w + self.b


def fit_probe(h: np.ndarray, target: np.ndarray, alphas: np.ndarray = PROBE_ALPHAS) -> Probe:
    """Ridge of `target` on h (sklearn RidgeCV, efficient leave-one-out over `alphas`)."""
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=alphas).fit(np.asarray(h, dtype=np.float64), target)
    return Probe(model.coef_.copy(), float(model.intercept_), float(model.alpha_))


def agreement(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Spearman ρ and R² of a probe's predictions against the judge's logit."""
    from scipy.stats import spearmanr

    predicted, target = np.asarray(predicted, float), np.asarray(target, float)
    r2 = 1 - np.mean((predicted - target) ** 2) / np.var(target)
    return {"spearman": float(spearmanr(predicted, target)[0]), "r2": float(r2), "n": len(target)}


# --- the world ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Pool:
    """One split's base samples: embeddings, texts, r*, judge toxicity, and prompts."""

    h: np.ndarray  # (m, d)
    texts: list[str]
    reward: np.ndarray  # (m,) r* = probe(h)
    toxic: np.ndarray  # (m,) bool, judge toxicity >= threshold
    prompt_codes: np.ndarray  # (m,) int64 stable prompt code
    prompts: list[str]


def _pool_groups(codes: np.ndarray) -> dict[int, np.ndarray]:
    """Pool size K -> (P_K, K) row indices of the prompts with K samples (row order kept)."""
    unique, inverse = np.unique(codes, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    groups: dict[int, list[np.ndarray]] = {}
    for p in range(len(unique)):
        groups.setdefault(int(sizes[p]), []).append(order[starts[p]:starts[p + 1]])
    return {K: np.stack(rows) for K, rows in sorted(groups.items())}


def _split_pairs(pool: _Pool, options: SirOptions, rng: np.random.Generator
                 ) -> tuple[Pairs, np.ndarray]:
    """SIR pairs of one split and the KL(π_k ‖ π_base) of each of its prompts."""
    index_T, index_NT, kls = [], [], []
    for K, rows in _pool_groups(pool.prompt_codes).items():
        if K < 2:
            continue  # a prompt with one sample cannot make a pair of distinct outputs
        rewards = pool.reward[rows]  # (P, K)
        chosen, other = sir_draw(rewards, options.beta, options.k, options.pairs_per_prompt, rng)
        index_T.append(np.take_along_axis(rows, chosen, axis=1).ravel())
        index_NT.append(np.take_along_axis(rows, other, axis=1).ravel())
        kls.append(kl_to_uniform(sir_probabilities(rewards, options.beta, options.k)))
    t, nt = np.concatenate(index_T), np.concatenate(index_NT)
    order = np.lexsort((np.arange(len(t)), pool.prompt_codes[t]))  # grouped by prompt
    t, nt = t[order], nt[order]
    pairs = Pairs(h_T=pool.h[t], h_NT=pool.h[nt], gt_T=pool.reward[t], gt_NT=pool.reward[nt],
                  prompt_ids=pool.prompt_codes[t], tnt=pool.toxic[nt] & ~pool.toxic[t],
                  text_T=[pool.texts[i] for i in t], text_NT=[pool.texts[i] for i in nt],
                  prompts=[pool.prompts[i] for i in t])
    return pairs, np.concatenate(kls)


def _swap(pairs: Pairs, mask: np.ndarray) -> Pairs:
    """Pairs with o_T and o_NT exchanged where `mask` (label noise)."""
    column = mask[:, None]

    def pick(a, b):
        if isinstance(a, list):
            return [y if m else x for x, y, m in zip(a, b, mask)]
        return np.where(column if a.ndim == 2 else mask, b, a)

    return Pairs(h_T=pick(pairs.h_T, pairs.h_NT), h_NT=pick(pairs.h_NT, pairs.h_T),
                 gt_T=pick(pairs.gt_T, pairs.gt_NT), gt_NT=pick(pairs.gt_NT, pairs.gt_T),
                 prompt_ids=pairs.prompt_ids, tnt=np.where(mask, False, pairs.tnt),
                 text_T=pick(pairs.text_T, pairs.text_NT), text_NT=pick(pairs.text_NT, pairs.text_T),
                 prompts=pairs.prompts)


@dataclass(frozen=True)
class SplitSamples:
    """One split of the source PairSet as arrays: per row a prompt, its aligned output (the
    probe's pool) and one base sample (the SIR pool), with the judge's toxicity of both."""

    h_T: np.ndarray  # (m, d) aligned outputs
    h_NT: np.ndarray  # (m, d) base samples
    judge_T: np.ndarray  # (m,) the judge's reward logit clip(log((1 − p)/p), ±6); toxic: <= 0
    judge_NT: np.ndarray
    prompt_codes: np.ndarray  # (m,) int64, stable per prompt
    text_T: list[str]
    text_NT: list[str]
    prompts: list[str]


_SAMPLES: dict[tuple[str, str, str], dict[str, SplitSamples]] = {}
_PROBES: dict[tuple[str, str, str], Probe] = {}  # the probe of those samples (a ridge fit)


def load_samples(pairset, judge: str, encoder: str = "minilm") -> dict[str, SplitSamples]:
    """SplitSamples of every split of a PairSet (embeddings from fairl.lm.encode's cache);
    memoised per (content hash, judge, encoder): every SIR world of a study shares them."""
    key = (pairset.content_hash, judge, encoder)
    if key not in _SAMPLES:
        _SAMPLES[key] = _read_samples(pairset, judge, encoder)
    return _SAMPLES[key]


def _read_samples(pairset, judge: str, encoder: str) -> dict[str, SplitSamples]:
    from fairl.data.pairset import stable_prompt_code, to_pairs  # heavy: scorers import torch
    from fairl.data.scorers import reward_from_toxicity

    samples = {}
    for split in SPLITS:
        dataset, pairs = pairset[split], to_pairs(pairset[split], encoder)
        samples[split] = SplitSamples(
            h_T=pairs.h_T, h_NT=pairs.h_NT,
            judge_T=reward_from_toxicity(np.asarray(dataset[f"tox_T_{judge}"], float)),
            judge_NT=reward_from_toxicity(np.asarray(dataset[f"tox_NT_{judge}"], float)),
            prompt_codes=np.array([stable_prompt_code(p) for p in dataset["prompt_id"]],
                                  dtype=np.int64),
            text_T=pairs.text_T, text_NT=pairs.text_NT, prompts=pairs.prompts)
    return samples


def make_sir_world(pairset, options: SirOptions, encoder: str = "minilm") -> World:
    """The SIR world of a PairSet (fairl.data.pairset); see `sir_world`. Samples and probe
    are shared by every SIR world of the process with the same PairSet, judge and encoder."""
    key = (pairset.content_hash, options.judge, encoder)
    samples = load_samples(pairset, options.judge, encoder)
    if key not in _PROBES:
        _PROBES[key] = fit_probe(samples["train"].h_T, samples["train"].judge_T)
    return sir_world(samples, options, source={"pairset": pairset.card.get("name"),
                                               "pairset_hash": pairset.content_hash,
                                               "encoder": encoder}, probe=_PROBES[key])


def sir_world(samples: dict[str, SplitSamples], options: SirOptions, source: dict,
              probe: Probe | None = None) -> World:
    """Probe on the train split's aligned outputs (`probe`: already fitted on them), SIR pairs
    of base samples per split, label noise on train; `source` (pairset, pairset_hash,
    encoder) names the data in the info."""
    target_T = {split: samples[split].judge_T for split in SPLITS}
    probe = probe or fit_probe(samples["train"].h_T, target_T["train"])
    held_out_h = np.concatenate([samples[s].h_T for s in ("validation", "test")])
    held_out_y = np.concatenate([target_T[s] for s in ("validation", "test")])
    base_y = np.concatenate([samples[s].judge_NT for s in SPLITS])
    base_h = np.concatenate([samples[s].h_NT for s in SPLITS])
    probe_texts = set(samples["train"].text_T)

    splits, kls, shared, max_pool = {}, {}, 0, 0
    m = options.misspecification
    for number, split in enumerate(SPLITS):
        part = samples[split]
        shared += sum(text in probe_texts for text in part.text_NT)
        pool = _Pool(h=part.h_NT, texts=part.text_NT,
                     reward=(1 - m) * probe(part.h_NT) + m * part.judge_NT,
                     toxic=part.judge_NT <= 0, prompt_codes=part.prompt_codes,
                     prompts=part.prompts)
        max_pool = max(max_pool, *_pool_groups(pool.prompt_codes))
        splits[split], kls[split] = _split_pairs(
            pool, options, np.random.default_rng([options.seed, number]))
    if options.label_noise > 0:
        noise_rng = np.random.default_rng([options.seed, len(SPLITS)])
        splits["train"] = _swap(splits["train"],
                                noise_rng.random(len(splits["train"])) < options.label_noise)
    key = json.dumps({**source, "options": _options_dict(options)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    # what r* is, whatever the pairs drawn with it (β, k, pairs per prompt, seed do not change it)
    reward = json.dumps({**source, "judge": options.judge, "m": options.misspecification},
                        sort_keys=True)
    all_kl = np.concatenate(list(kls.values()))
    info = {
        **source, "options": _options_dict(options),
        "probe": {"judge": options.judge, "alpha": probe.alpha, "fitted_on": "o_T of the "
                  f"train split ({len(target_T['train'])} aligned outputs)",
                  "held_out_aligned": agreement(probe(held_out_h), held_out_y),
                  "world_base_outputs": agreement(probe(base_h), base_y),
                  "base_texts_also_in_probe_pool": int(shared)},
        "kl": {"mean": float(all_kl.mean()), **{s: float(v.mean()) for s, v in kls.items()}},
        "max_pool": max_pool,
        "exact_pi_star": options.k is None or options.k >= max_pool,
        "probe_w": probe.w, "probe_b": probe.b,
        "reward_id": hashlib.sha256(reward.encode()).hexdigest()[:16],
    }
    return World(name="sir", train=splits["train"], test=splits["test"],
                 validation=splits["validation"], dataset_hash=f"sir-{digest}", info=info)


def _options_dict(options: SirOptions) -> dict:
    """The options as data; m = 0 is left out, so the world's id is what it was before m."""
    values = dataclasses.asdict(options)
    if values["misspecification"] == 0:
        del values["misspecification"]
    return values


def world_summary(world: World) -> str:
    """The numbers `fairl world info --world sir` prints (oracle STARC fitted here, seconds)."""
    from fairl.reference import oracle_starc

    info, options = world.info, world.info["options"]
    splits = {"train": world.train, "validation": world.validation, "test": world.test}
    probe = info["probe"]
    held, base = probe["held_out_aligned"], probe["world_base_outputs"]
    k = ("whole pool (exact π*)" if options["k"] is None
         else f"{options['k']} (π_k, capped at the pool)")
    pi = "π*" if info["exact_pi_star"] else "π_k"
    pairs = "  ".join(f"{s}={len(p)}" for s, p in splits.items())
    tnt = "  ".join(f"{s}={p.tnt.mean():.1%} ({int(p.tnt.sum())})" for s, p in splits.items())
    kl_splits = ", ".join(f"{s} {info['kl'][s]:.3f}" for s in SPLITS)
    m = options.get("misspecification", 0.0)
    lines = [
        (f"world 'sir' from PairSet {info['pairset']!r} ({info['pairset_hash'][:19]}), "
         f"encoder {info['encoder']}  (dataset hash {world.dataset_hash})"),
        f"  pairs: {pairs}  ({options['pairs_per_prompt']} per prompt)",
        f"  T→NT share (judge {probe['judge']}): {tnt}",
        f"  β = {options['beta']:g}   k = {k}   label noise = {options['label_noise']:g} (train)",
        (f"  r* = (1 − m)·probe + m·{probe['judge']} logit, misspecification m = {m:g}"
         + ("  (r* linear in h)" if m == 0 else "")),
        (f"  KL({pi}‖π_base) per prompt, exact on the pool: mean {info['kl']['mean']:.3f} nats "
         f"({kl_splits})"),
        (f"  probe = w·h + b (ridge α={probe['alpha']:g}) vs the {probe['judge']} judge's "
         f"logit: held-out aligned outputs ρ={held['spearman']:.3f}, R²={held['r2']:.3f} "
         f"(n={held['n']}); the world's base outputs ρ={base['spearman']:.3f}, "
         f"R²={base['r2']:.3f} (n={base['n']})"),
        f"  base texts also in the probe's pool: {probe['base_texts_also_in_probe_pool']}",
        ("  oracle linear STARC (ridge of r* on h, train → test): "
         f"{oracle_starc(world.train, world.test).starc:.4f}"),
    ]
    return "\n".join(lines)
