import warnings

import numpy as np
import pytest

from fairl.lm import encode as encode_module
from fairl.lm.encode import (
    CacheCorruptionWarning,
    EmbeddingCache,
    MiniLMEncoder,
    encode,
    get_encoder,
)

TEXTS = ["The cat sat on the mat.", "You are a complete idiot.", "Rain is expected tomorrow.",
         "I love this film", "", "The committee will meet again next week to decide."]


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm")


def test_minilm_vectors_are_normalised_and_match_sentence_transformers(minilm, tmp_path):
    vectors = encode(TEXTS, "minilm", cache_root=tmp_path, progress=False)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    reference = minilm.model.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)


def test_second_call_is_a_full_cache_hit(minilm, tmp_path):
    first, stats = encode(TEXTS, minilm, cache_root=tmp_path, return_stats=True, progress=False)
    assert stats.n_encoded == len(TEXTS) and stats.n_cached == 0 and stats.shards_written == 1
    forwarded = minilm.n_forwarded
    second, stats = encode(TEXTS, minilm, cache_root=tmp_path, return_stats=True, progress=False)
    assert stats.n_cached == len(TEXTS) and stats.n_encoded == 0 and stats.shards_written == 0
    assert minilm.n_forwarded == forwarded  # no model forward at all
    np.testing.assert_array_equal(first, second)


def test_partial_hit_encodes_only_new_texts_and_keeps_order(minilm, tmp_path):
    encode(TEXTS[:4], minilm, cache_root=tmp_path, progress=False)
    texts = [TEXTS[5], TEXTS[0], "A brand new sentence.", TEXTS[0]]
    vectors, stats = encode(texts, minilm, cache_root=tmp_path, return_stats=True, progress=False)
    assert (stats.n_texts, stats.n_unique, stats.n_cached, stats.n_encoded) == (4, 3, 1, 2)
    np.testing.assert_array_equal(vectors[1], vectors[3])
    alone = encode(texts, minilm, cache=False, progress=False)
    np.testing.assert_allclose(vectors, alone, atol=1e-5)


def test_changed_text_or_encoder_misses(minilm, tmp_path):
    encode(TEXTS, minilm, cache_root=tmp_path, progress=False)
    _, stats = encode(["The cat sat on the mat!"], minilm, cache_root=tmp_path,
                      return_stats=True, progress=False)
    assert stats.n_encoded == 1
    shorter = MiniLMEncoder(max_length=8)
    assert shorter.id != minilm.id
    _, stats = encode(TEXTS, shorter, cache_root=tmp_path, return_stats=True, progress=False)
    assert stats.n_cached == 0 and stats.n_encoded == len(TEXTS)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate"])
def test_corrupted_shard_is_detected_discarded_and_rebuilt(minilm, tmp_path, damage):
    clean = encode(TEXTS, minilm, cache_root=tmp_path, progress=False)
    (shard,) = EmbeddingCache(tmp_path, minilm).shards()
    data = bytearray(shard.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    shard.write_bytes(bytes(data))
    with pytest.warns(CacheCorruptionWarning, match="corrupt"):
        rebuilt, stats = encode(TEXTS, minilm, cache_root=tmp_path, return_stats=True,
                                progress=False)
    assert stats.shards_discarded == 1 and stats.n_cached == 0 and stats.n_encoded == len(TEXTS)
    # Rebuilt: one shard again (same content, so the same checksum name), and it verifies.
    (rebuilt_shard,) = EmbeddingCache(tmp_path, minilm).shards()
    assert EmbeddingCache(tmp_path, minilm).read(rebuilt_shard) is not None
    np.testing.assert_allclose(rebuilt, clean, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is clean
        _, stats = encode(TEXTS, minilm, cache_root=tmp_path, return_stats=True, progress=False)
    assert stats.n_cached == len(TEXTS)


def test_shard_with_wrong_shape_is_rejected(minilm, tmp_path):
    store = EmbeddingCache(tmp_path, minilm)
    keys = np.frombuffer(encode_module.text_key(TEXTS[0]), dtype=np.uint8).reshape(1, 32)
    store.write(keys, np.zeros((1, 100), dtype=np.float32))  # valid checksum, wrong dim
    with pytest.warns(CacheCorruptionWarning, match="bad vectors"):
        _, stats = encode(TEXTS[:1], minilm, cache_root=tmp_path, return_stats=True,
                          progress=False)
    assert stats.n_encoded == 1


class _KilledAfter(MiniLMEncoder):
    """MiniLM that dies on its `fail_at`-th forward call, like a killed process."""

    def __init__(self, fail_at: int, model):
        super().__init__()
        self.calls, self.fail_at, self._model = 0, fail_at, model

    def _forward(self, texts, batch_size):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super()._forward(texts, batch_size)


def test_killed_encode_keeps_finished_chunks(minilm, tmp_path):
    texts = [f"Sentence number {i} about topic {i % 7}." for i in range(40)]
    dying = _KilledAfter(fail_at=3, model=minilm.model)
    with pytest.raises(KeyboardInterrupt):
        encode(texts, dying, cache_root=tmp_path, chunk_size=8, batch_size=2, progress=False)
    assert len(EmbeddingCache(tmp_path, dying).shards()) == 2  # two finished 8-text chunks
    _, stats = encode(texts, minilm, cache_root=tmp_path, chunk_size=8,
                      return_stats=True, progress=False)
    assert stats.n_cached == 16 and stats.n_encoded == 24


def test_many_shards_are_compacted(minilm, tmp_path, monkeypatch):
    monkeypatch.setattr(encode_module, "COMPACT_AT", 2)
    for text in TEXTS[:4]:
        encode([text], minilm, cache_root=tmp_path, progress=False)
    assert len(EmbeddingCache(tmp_path, minilm).shards()) <= 2
    _, stats = encode(TEXTS[:4], minilm, cache_root=tmp_path, return_stats=True, progress=False)
    assert stats.n_cached == 4


@pytest.mark.slow
def test_smollm2_meanpool(tmp_path):
    encoder = get_encoder("smollm2-meanpool")
    vectors, stats = encode(TEXTS, encoder, cache_root=tmp_path, return_stats=True,
                            progress=False)
    assert vectors.shape == (len(TEXTS), 576) and np.isfinite(vectors).all()
    assert stats.n_encoded == len(TEXTS)
    # Right padding + masked mean: a text's vector does not depend on its batch.
    np.testing.assert_allclose(encoder.forward([TEXTS[0]], 1)[0], vectors[0], atol=1e-3)
    _, stats = encode(TEXTS, encoder, cache_root=tmp_path, return_stats=True, progress=False)
    assert stats.n_cached == len(TEXTS) and stats.n_encoded == 0
