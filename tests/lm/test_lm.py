"""fairl.lm on the real SmolLM2 weights (small sizes), plus the hub/local loading paths."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from fairl import lm

PROMPTS = [
    "The weather today is",
    "My favourite recipe for a quick dinner starts with",
    "",
    "He walked into the room and",
    "Scientists announced on Tuesday that the new telescope had",
]


@pytest.fixture(scope="module")
def smollm2():
    return lm.load_lm()


@pytest.mark.slow
def test_generate_is_deterministic_and_independent_of_batching(smollm2):
    model, tokenizer = smollm2
    first = lm.generate(model, tokenizer, PROMPTS, k=2, max_new_tokens=8, batch_size=4)
    again = lm.generate(model, tokenizer, PROMPTS, k=2, max_new_tokens=8, batch_size=4)
    # Other batch sizes put each prompt next to other (left-padded) neighbours.
    one_by_one = lm.generate(model, tokenizer, PROMPTS, k=2, max_new_tokens=8, batch_size=1)
    other_seed = lm.generate(model, tokenizer, PROMPTS, k=2, max_new_tokens=8, seed=1)
    assert first == again == one_by_one
    assert other_seed != first
    assert [len(c) for c in first] == [2] * len(PROMPTS)
    assert sum(text.strip() != "" for c in first for text in c) >= 8
    assert all(c[0] != c[1] for c in first[:2])  # the k samples of a prompt differ


@pytest.mark.slow
def test_sequence_logprobs_match_unpadded_forward(smollm2):
    model, tokenizer = smollm2
    completions = [" sunny and warm.", " onions and garlic", " hello", " sat down", " found"]
    batched = lm.sequence_logprobs(model, tokenizer, PROMPTS, completions, batch_size=5)
    expected = []
    with torch.inference_mode():
        for prompt, completion in zip(PROMPTS, completions):
            prompt_ids = lm.encode_prompts(tokenizer, [prompt])[0]
            completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([prompt_ids + completion_ids])).logits[0]
            logprobs = torch.log_softmax(logits.float(), -1)
            expected.append(
                sum(
                    logprobs[len(prompt_ids) - 1 + t, token].item()
                    for t, token in enumerate(completion_ids)
                )
            )
    np.testing.assert_allclose(batched, expected, atol=2e-3)
    fluent = lm.perplexity(model, tokenizer, ["The cat sat on the"], [" mat and went to sleep."])
    scrambled = lm.perplexity(model, tokenizer, ["The cat sat on the"], [" sleep went mat to the."])
    assert 1 < fluent < scrambled


@pytest.mark.slow
def test_generate_to_file_resumes_from_last_finished_chunk(smollm2, tmp_path, monkeypatch):
    model, tokenizer = smollm2
    options = {"chunk_size": 2, "max_new_tokens": 6, "k": 1, "seed": 3, "progress": False}
    one_shot = lm.generate_to_file(model, tokenizer, PROMPTS, tmp_path / "one_shot", **options)

    real_generate = lm.generate
    calls: list[int] = []

    def killed_after_two_chunks(*args, index_offset=0, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        calls.append(index_offset)
        return real_generate(*args, index_offset=index_offset, **kwargs)

    monkeypatch.setattr(lm.sample, "generate", killed_after_two_chunks)  # generate_to_file's own
    with pytest.raises(KeyboardInterrupt):
        lm.generate_to_file(model, tokenizer, PROMPTS, tmp_path / "resumed", **options)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("chunk-*")) == [
        "chunk-00000.jsonl",
        "chunk-00001.jsonl",
    ]
    calls.clear()
    resumed = lm.generate_to_file(model, tokenizer, PROMPTS, tmp_path / "resumed", **options)
    assert calls == [4]  # only the missing third chunk (prompts 4..) was generated
    assert resumed == one_shot
    assert one_shot == real_generate(model, tokenizer, PROMPTS, **_without(options, "chunk_size"))

    with pytest.raises(ValueError, match="different generation job"):
        lm.generate_to_file(
            model, tokenizer, PROMPTS, tmp_path / "resumed", **{**options, "seed": 4}
        )


def _without(options: dict, key: str) -> dict:
    return {k: v for k, v in options.items() if k != key}


@pytest.mark.parametrize("offline_flags", [True, False])
def test_unavailable_hub_id_fails_fast_with_instructions(monkeypatch, offline_flags):
    """With the offline flags, or without them and no reachable hub (or no such repo)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if offline_flags:
            monkeypatch.setenv(var, "1")
        else:
            monkeypatch.delenv(var, raising=False)
    name = "fairl-tests/no-such-model-4242"
    started = time.perf_counter()
    with pytest.raises(lm.ModelUnavailable) as caught:
        lm.load_lm(name)
    assert time.perf_counter() - started < 15
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    for needle in (name, f"huggingface-cli download {name}", "HF_HOME", "HF_HUB_OFFLINE"):
        assert needle in message
    assert "TRANSFORMERS_OFFLINE" in message


def test_local_directory_loads_its_own_weights(tmp_path):
    """A local folder (here a tiny random Llama) goes through the hub-name code path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer_source = lm.smollm2_cache()
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    saved = LlamaForCausalLM(config)
    saved.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_source / name, tmp_path / name)

    model, tokenizer = lm.load_lm(str(tmp_path))
    assert model.config.hidden_size == 32
    torch.testing.assert_close(
        model.model.layers[1].mlp.down_proj.weight, saved.model.layers[1].mlp.down_proj.weight
    )
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    texts = lm.generate(model, tokenizer, ["Hello", "A longer prompt here"], max_new_tokens=3)
    assert len(texts) == 2


def test_corrupted_cached_weights_are_detected_and_rebuilt(tmp_path, monkeypatch):
    good = lm.smollm2_cache()  # builds the real cache once if missing
    monkeypatch.setenv("FAIRL_CACHE", str(tmp_path))
    target = tmp_path / "models" / good.name
    shutil.copytree(good, target)
    rebuilt: list[str] = []

    def fake_convert(gguf, out_dir):  # copies the good build instead of a 25 s conversion
        rebuilt.append(str(out_dir))
        for path in good.iterdir():
            shutil.copy(path, out_dir / path.name)

    monkeypatch.setattr(lm.load, "_convert_gguf", fake_convert)
    assert lm.smollm2_cache() == target and rebuilt == []  # intact: reused

    with open(target / lm.WEIGHTS, "r+b") as handle:  # flip one byte in the middle
        handle.seek(200_000_000)
        byte = handle.read(1)
        handle.seek(200_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert lm.smollm2_cache() == target and len(rebuilt) == 1
    manifest = json.loads((target / lm.MANIFEST).read_text())
    assert lm.load._manifest_ok(target) and lm.WEIGHTS in manifest["files"]
    assert not list((tmp_path / "models").glob(".*"))  # no staging folder left behind


def test_configure_threads_honours_fairl_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(lm.load, "_THREADS_CONFIGURED", False)
    monkeypatch.setenv("FAIRL_THREADS", "1")
    try:
        assert lm.configure_threads() == 1
        monkeypatch.setenv("FAIRL_THREADS", "2")
        assert lm.configure_threads() == 1  # decided once per process
    finally:
        torch.set_num_threads(before)
