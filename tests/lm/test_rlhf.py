"""fairl.lm.rlhf: RLOO math, config validation, and real (tiny) runs on SmolLM2."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from fairl import lm
from fairl.lm import rlhf

PROMPTS = [
    "The weather today is",
    "My favourite recipe starts with",
    "He walked into the room and",
    "Scientists announced that the telescope had",
    "The best thing about weekends is",
    "When I opened the door I saw",
    "Our team finally won the match because",
    "The old house at the end of the street",
]


def e_fraction(texts: list[str]) -> np.ndarray:
    """Toy reward: share of characters that are the letter 'e'."""
    return np.array([t.lower().count("e") / max(len(t), 1) for t in texts])


def _flat(nested: list[list[str]]) -> list[str]:
    return [text for texts in nested for text in texts]


def test_rloo_advantages_leave_one_out():
    rewards = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    advantages = rlhf.rloo_advantages(rewards)
    np.testing.assert_allclose(advantages[0], [1 - 2.5, 2 - 2.0, 3 - 1.5])
    np.testing.assert_allclose(advantages[1], 0.0)


def test_step_prompts_cover_every_prompt_once_per_epoch():
    n, per_step = 10, 4
    seen = np.concatenate([rlhf.step_prompt_indices(n, per_step, s, seed=7) for s in range(5)])
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    again = rlhf.step_prompt_indices(n, per_step, 3, seed=7)
    np.testing.assert_array_equal(again, seen[12:16])
    assert not np.array_equal(rlhf.step_prompt_indices(n, per_step, 0, seed=8), seen[:4])


@pytest.mark.parametrize(
    "field, value",
    [("steps", 0), ("samples_per_prompt", 1), ("kl_beta", -0.1), ("lr", 0.0), ("lora_dropout", 1)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"RLHFConfig.{field}"):
        rlhf.RLHFConfig(**{field: value})


def test_bf16_autocast_auto_resolves_to_the_cpu_and_explicit_values_stay():
    assert rlhf.RLHFConfig().bf16_autocast is rlhf.native_bf16()
    assert rlhf.RLHFConfig(bf16_autocast=True).bf16_autocast is True
    assert rlhf.RLHFConfig(bf16_autocast=False).bf16_autocast is False


def test_reward_fn_may_take_prompts_and_must_return_one_finite_float_per_text():
    seen = {}

    def with_prompts(completions, prompts):
        seen["prompts"] = prompts
        return [len(c) for c in completions]

    np.testing.assert_array_equal(rlhf._call_reward(with_prompts, ["ab", "c"], ["p", "q"]), [2, 1])
    assert seen["prompts"] == ["p", "q"]
    with pytest.raises(ValueError, match="2 finite floats"):
        rlhf._call_reward(lambda texts: [1.0], ["a", "b"], ["p", "q"])
    with pytest.raises(ValueError, match="finite"):
        rlhf._call_reward(lambda texts: [1.0, np.nan], ["a", "b"], ["p", "q"])


TOY = rlhf.RLHFConfig(
    steps=10,
    prompts_per_step=4,
    samples_per_prompt=4,
    max_new_tokens=10,
    lr=3e-3,
    kl_beta=0.01,
    micro_batch_size=16,
    sample_batch_size=16,
    checkpoint_every=5,
    seed=0,
)


@pytest.mark.slow
def test_policy_learns_toy_reward_and_is_cached(tmp_path):
    curves_seen: list[int] = []
    result = rlhf.train_policy(
        "smollm2-135m-instruct",
        e_fraction,
        PROMPTS,
        TOY,
        out_dir=tmp_path / "run",
        reward_id="e-fraction",
        log_fn=lambda step, metrics: curves_seen.append(step),
        progress=False,
    )
    assert curves_seen == list(range(1, TOY.steps + 1))
    assert len(result.curves["reward_mean"]) == TOY.steps and not result.from_cache
    assert {"reward_mean", "reward_std", "kl", "loss", "length"} <= set(result.curves)

    # Fresh samples (a seed training never used) from the base and from the trained policy.
    base, tokenizer = lm.load_lm()
    policy, _ = rlhf.load_policy(tmp_path / "run")
    options = {"k": 4, "max_new_tokens": 10, "seed": 12345, "progress": False}
    before = e_fraction(_flat(lm.generate(base, tokenizer, PROMPTS, **options)))
    after = e_fraction(_flat(lm.generate(policy, tokenizer, PROMPTS, **options)))
    assert after.mean() > before.mean() + 0.03, (before.mean(), after.mean())

    started = time.perf_counter()
    cached = rlhf.train_policy(
        "smollm2-135m-instruct",
        e_fraction,
        PROMPTS,
        TOY,
        out_dir=tmp_path / "run",
        reward_id="e-fraction",
        progress=False,
    )
    assert cached.from_cache and time.perf_counter() - started < 2
    assert cached.curves == result.curves and cached.identity == result.identity
    with pytest.raises(ValueError, match="another run"):
        rlhf.train_policy(
            "smollm2-135m-instruct",
            e_fraction,
            PROMPTS,
            TOY,
            out_dir=tmp_path / "run",
            reward_id="another-reward",
            progress=False,
        )


@pytest.mark.slow
def test_killed_run_resumes_from_checkpoint_with_identical_curves(tmp_path):
    """On the paper rehearsal's random-initialised GPT-NeoX (pythia's class, LoRA on its
    targets): the resume path is the model's class's, not SmolLM2's; the toy test above
    covers learning on a pretrained LM."""
    from paper_standins import build_standins

    base = str(build_standins(tmp_path / "standins", pythia_only=True)["pythia"])
    config = dataclasses.replace(TOY, steps=4, checkpoint_every=2, max_new_tokens=6,
                                 lora_targets=("query_key_value", "dense", "dense_h_to_4h",
                                               "dense_4h_to_h"))
    common = {"reward_id": "e-fraction", "progress": False}
    straight = rlhf.train_policy(base, e_fraction, PROMPTS, config, out_dir=tmp_path / "a",
                                 **common)

    def killed_at_step_3(step, metrics):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        rlhf.train_policy(
            base,
            e_fraction,
            PROMPTS,
            config,
            out_dir=tmp_path / "b",
            log_fn=killed_at_step_3,
            **common,
        )
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    resumed_steps: list[int] = []
    resumed = rlhf.train_policy(
        base,
        e_fraction,
        PROMPTS,
        config,
        out_dir=tmp_path / "b",
        log_fn=lambda step, metrics: resumed_steps.append(step),
        **common,
    )
    assert resumed_steps == [3, 4]
    for key in ("reward_mean", "kl", "loss", "length"):
        np.testing.assert_allclose(resumed.curves[key], straight.curves[key], rtol=1e-6, atol=1e-9)
