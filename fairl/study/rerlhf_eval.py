"""Re-RLHF rewards and evaluation: a reward source as text -> reward, a policy's toxicity & KL.

Rewards: an IRL source is linear heads on the frozen encoder, R(o) = θ_D·h(o) + b_D
(+ θ_F·h(o) + b_F for FA-IRL), fitted here, read from a study trial's rewards.npz, or from a
saved FitResult; a scorer source is r*; the base source trains nothing. Evaluation: see
`evaluate_policy`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fairl import lm
from fairl.config import ConfigError
from fairl.data.scorers import get_scorer, reward_from_toxicity
from fairl.experiment import WorldSpec, run_experiment
from fairl.irl import FitConfig, FitResult
from fairl.lm.encode import encode, get_encoder
from fairl.metrics import evaluate_reward
from fairl.paths import redact
from fairl.runs.read import heads_from_run, param_value, trial_run
from fairl.runs.store import client
from fairl.study.rerlhf_spec import FIT_METRICS, EvalSpec, Study, hash_of
from fairl.worlds import load_world


class EmbeddingReward:
    """A fitted IRL reward as a text -> reward function: R(encode(texts)) (R_D + R_F)."""

    def __init__(self, result, encoder: str = "minilm", device: str = "cpu"):
        self.result = result
        # cpu: the encoder object shared with the world's loader (same lru_cache key).
        self.encoder = get_encoder(encoder) if device == "cpu" else \
            get_encoder(encoder, device=device)

    def __call__(self, texts: list[str]) -> np.ndarray:
        # Policy samples are new texts every step: no point filling the embedding cache.
        h = encode(list(texts), self.encoder, cache=False, progress=False)
        return np.asarray(self.result.reward(h), dtype=np.float64)

    @property
    def id(self) -> str:
        """Content hash of the heads and the encoder (what train_policy caches under)."""
        parts = [np.asarray(self.result.theta_D, np.float32).tobytes(),
                 np.asarray(self.result.theta_F if self.result.theta_F is not None else [],
                            np.float32).tobytes(),
                 np.array([self.result.b_D, self.result.b_F], np.float32).tobytes(),
                 self.encoder.id.encode()]
        return "irl:" + hashlib.sha256(b"|".join(parts)).hexdigest()[:16]


@dataclasses.dataclass
class Reward:
    """A reward function with where it came from (tags) and what to log with it."""

    fn: Callable[[list[str]], np.ndarray] | None  # None: the base floor, no training
    reward_id: str
    tags: dict[str, str]
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {"fit": {...}}
    artifacts: dict[str, str | bytes] = dataclasses.field(default_factory=dict)


def _source_run(uri: str, run_id: str):
    """The MLflow run a source's `run_id` names; a run the store does not have is the study
    file's error (ConfigError), not the store's (fairl.outage.refused_by)."""
    from mlflow.exceptions import MlflowException

    try:
        return client(uri).get_run(run_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    # raised outside the handler: no link back to the store's error
    raise ConfigError(f"sources: run_id {run_id!r}: no such run in {redact(uri)}")


def irl_heads(uri: str, run_id: str, seed: int) -> tuple[FitResult, Any]:
    """FitResult (heads only) of seed `seed` of a study trial, and the run.

    Through the trial's pyfunc reward model (fairl.models), as `fairl score` reads it; runs
    logged before the models have only rewards.npz, read directly.
    """
    run = trial_run(_source_run(uri, run_id))
    if run.tags.get("reward_model_uri"):
        from fairl.models import load_reward  # heavy: mlflow.pyfunc (~3 s)

        model = load_reward(f"runs:/{run_id}/reward", uri)
        if seed not in model.results:
            raise ConfigError(f"run {run_id}: the reward model has seeds "
                              f"{sorted(model.results)}, not {seed}; set reward_seed")
        return model.result(seed), run
    heads, run = heads_from_run(uri, run_id, seed)
    fit = {key.removeprefix("fit."): param_value(value)
           for key, value in run.params.items() if key.startswith("fit.")}
    return FitResult.from_heads(heads, FitConfig(**{**fit, "seed": seed})), run


def make_reward(study: Study, source_name: str, seed: int, uri: str, world=None) -> Reward:
    """The text -> reward function of one source for one seed (fitting IRL heads if asked)."""
    source = study.spec.sources[source_name]
    if source.kind == "base":
        return Reward(None, "none", {"reward_origin": "none (base model, no training)"})
    if source.kind == "scorer":
        scorer = get_scorer(source.scorer, study.device)
        return Reward(scorer.reward, f"r*:{source.scorer}:{scorer.version}",
                      {"reward_origin": f"r* = log-odds non-toxic by {source.scorer}",
                       "reward_scorer_version": scorer.version})
    world = world or load_study_world(study)
    encoder = world.info.get("encoder", "minilm")
    tags = {"reward_encoder": encoder}
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    if source.fit is not None:
        config = study.fit_config(source, seed)
        started = time.perf_counter()
        outcome = run_experiment(WorldSpec(name=study.spec.world["name"],
                                           options=study.spec.world.get("options") or {}),
                                 config, world)
        result = outcome.result
        fit_dict = dataclasses.asdict(config)
        tags.update(reward_origin=f"fitted here: {config.method} ({config.objective})",
                    reward_fit_hash=hash_of(fit_dict), reward_method=config.method)
        params = {"fit": fit_dict}
        metrics = {f"reward_test_{key}": outcome.test_metrics[key] for key in FIT_METRICS
                   if key in outcome.test_metrics}
        metrics["reward_fit_seconds"] = time.perf_counter() - started
    elif source.run_id is not None:
        result, run = irl_heads(uri, source.run_id, source.reward_seed
                                if source.reward_seed is not None else seed)
        tags.update(reward_origin=f"MLflow run {source.run_id}", reward_run_id=source.run_id,
                    reward_method=run.tags.get("method", result.config.method),
                    reward_dataset_hash=run.tags.get("dataset_hash", ""))
        params = {"fit": dataclasses.asdict(result.config)}
    else:
        result = FitResult.load(source.path)
        digest = hashlib.sha256(Path(source.path).read_bytes()).hexdigest()[:16]
        tags.update(reward_origin=f"file {source.path}", reward_file_sha256=digest,
                    reward_method=result.config.method)
        params = {"fit": dataclasses.asdict(result.config)}
    if len(result.theta_D) != world.train.h_T.shape[1]:
        raise ConfigError(f"sources.{source_name}: reward heads have d={len(result.theta_D)}, "
                          f"the world's encoder {encoder} gives d={world.train.h_T.shape[1]}")
    fn = EmbeddingReward(result, encoder, study.device)
    if source.fit is None:  # heads from elsewhere: how well they do on this world's test pairs
        test = evaluate_reward(result.reward, world.test)
        metrics.update({f"reward_test_{key}": test[key] for key in FIT_METRICS if key in test})
    return Reward(fn, fn.id, tags, metrics, params, {"reward.npz": _npz_bytes(result)})


def _npz_bytes(result) -> bytes:
    """FitResult.save's .npz as bytes (for the run's reward.npz artifact)."""
    with tempfile.TemporaryDirectory() as folder:
        return result.save(Path(folder) / "reward.npz").read_bytes()


def load_study_world(study: Study):
    """The study's world (embeddings from the cache); its hash must match the card's."""
    world = load_world(study.spec.world["name"], study.spec.world.get("options") or {})
    if world.dataset_hash != study.dataset_hash:
        raise ConfigError(f"world {study.spec.world}: hash {world.dataset_hash} is not the "
                          f"card's {study.dataset_hash}")
    return world


def word_bigrams(text: str) -> list[tuple[str, str]]:
    words = text.lower().split()
    return list(itertools.pairwise(words))


def diversity(texts: list[str]) -> dict[str, float]:
    """distinct_2 (distinct word bigrams / all, over every text) and the mean in-text
    bigram repetition (1 - distinct / all bigrams of one text): a repetition-hacking guard."""
    bigrams = [word_bigrams(text) for text in texts]
    every = [gram for grams in bigrams for gram in grams]
    repeated = [1 - len(set(grams)) / len(grams) for grams in bigrams if grams]
    return {"distinct_2": len(set(every)) / len(every) if every else 0.0,
            "repetition": float(np.mean(repeated)) if repeated else 0.0}


def toxicity_metrics(texts: list[str], judges: list[str], threshold: float,
                     device: str = "cpu") -> dict[str, float]:
    """tox_rate_<judge> (fraction >= threshold) and tox_mean_<judge> of `texts`."""
    metrics = {}
    for judge in judges:
        values = get_scorer(judge, device).toxicity(texts)
        metrics[f"tox_rate_{judge}"] = float(np.mean(values >= threshold)) if len(texts) else 0.0
        metrics[f"tox_mean_{judge}"] = float(np.mean(values)) if len(texts) else 0.0
    return metrics


def evaluate_policy(policy, base, tokenizer, prompts: list[str], spec: EvalSpec, seed: int,
                    judges: list[str], threshold: float, reward_fn=None, progress: bool = False,
                    device: str = "cpu", r_star_scorer: str = "profanity"
                    ) -> tuple[dict[str, float], list[dict]]:
    """Metrics of `policy` on `prompts` (see the module docstring) and one row per sample.

    `policy` is None for the base itself (KL 0, nothing scored twice). Sampling seed:
    spec.seed + seed, the same for every source of that seed. `r_star_scorer`: the world's r* scorer.
    """
    model = policy if policy is not None else base
    nested = lm.generate(model, tokenizer, prompts, k=spec.samples,
                         max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
                         seed=spec.seed + seed, batch_size=spec.batch_size, progress=progress)
    rows = [{"prompt_index": i, "sample": j, "prompt": prompt, "completion": text}
            for i, (prompt, texts) in enumerate(zip(prompts, nested))
            for j, text in enumerate(texts)]
    sample_prompts = [row["prompt"] for row in rows]
    texts = [row["completion"] for row in rows]
    logp_base = lm.sequence_logprobs(base, tokenizer, sample_prompts, texts)
    logp_policy = logp_base if policy is None else \
        lm.sequence_logprobs(policy, tokenizer, sample_prompts, texts)
    n_tokens = np.array([len(ids) for ids in
                         tokenizer(texts, add_special_tokens=False)["input_ids"]]) \
        if texts else np.zeros(0)
    metrics = toxicity_metrics(texts, judges, threshold, device)
    metrics["kl_to_base"] = float(np.mean(logp_policy - logp_base))
    metrics["ppl_base"] = float(np.exp(-logp_base.sum() / max(n_tokens.sum(), 1)))
    metrics["length_mean"] = float(n_tokens.mean())
    metrics["empty_rate"] = float(np.mean(n_tokens == 0))
    metrics.update(diversity(texts))
    per_judge = {judge: get_scorer(judge, device).toxicity(texts) for judge in judges}
    scored = per_judge.get(r_star_scorer)
    if scored is None:
        scored = get_scorer(r_star_scorer, device).toxicity(texts)
    r_star = reward_from_toxicity(scored)
    metrics["r_star_mean"] = float(r_star.mean())
    own = np.asarray(reward_fn(texts), dtype=np.float64) if reward_fn is not None else None
    if own is not None:
        metrics["reward_own_mean"] = float(own.mean())
    for index, row in enumerate(rows):
        for judge, values in per_judge.items():
            row[f"tox_{judge}"] = float(values[index])
        row["r_star"] = float(r_star[index])
        if own is not None:
            row["reward_own"] = float(own[index])
        row["n_tokens"] = int(n_tokens[index])
        row["logp_policy"] = float(logp_policy[index])
        row["logp_base"] = float(logp_base[index])
    metrics["n_samples"] = float(len(texts))
    return metrics, rows


