"""The committed default world (fairl/data/default_world): intact, and the experiment it claims.

These read the shipped parquet files (no model is run): the hash matches the card, RLHF
lowered toxicity by the reward scorer and by the independent judge, T→NT pairs exist in
every split, splits share no prompt, and the paper's studies can compose from it.
"""

import numpy as np
import pytest
import yaml

from fairl.data.compose import compose_indices
from fairl.data.pairset import PairSet
from fairl.paths import DEFAULT_WORLD_DIR, project_root


@pytest.fixture(scope="module")
def world() -> PairSet:
    return PairSet.load(DEFAULT_WORLD_DIR)  # verify=True: content hash vs card


def test_shipped_and_intact(world):
    assert set(world.splits) == {"train", "validation", "test"}
    assert len(world) >= 10_000
    for split, ds in world.splits.items():
        assert len(ds) == world.card["files"][f"{split}.parquet"]["rows"]
        assert all(isinstance(t, str) for t in ds["o_T"][:50] + ds["o_NT"][:50])


def test_rlhf_lowered_toxicity_by_both_judges(world):
    for split in world.splits:
        for judge, rates in world.card["toxicity"][split].items():
            assert rates["aligned_rate"] < rates["base_rate"], (split, judge, rates)


def test_tnt_pairs_labelled_by_the_reward_scorer(world):
    labelling = world.card["labelling"]
    scorer, threshold = labelling["reward_scorer"], labelling["toxic_threshold"]
    for split, ds in world.splits.items():
        tnt = np.asarray(ds["tnt"], dtype=bool)
        expected = (np.asarray(ds[f"tox_NT_{scorer}"]) >= threshold) & (
            np.asarray(ds[f"tox_T_{scorer}"]) < threshold)
        assert np.array_equal(tnt, expected)
        assert tnt.sum() >= 50, (split, int(tnt.sum()))


def test_splits_share_no_prompt(world):
    prompts = {split: set(ds["prompt_id"]) for split, ds in world.splits.items()}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["validation"] & prompts["test"]


def test_aligned_model_moved_away_from_base(world):
    assert world.card["mean_kl"]["train"] > 0


def test_tnt_study_can_compose_every_fraction(world):
    study = yaml.safe_load((project_root() / "studies" / "tnt_fraction.yaml").read_text())
    n = study["world"]["compose"]["n"]
    tnt = np.asarray(world["train"]["tnt"], dtype=bool)
    for fraction in study["search"]["world.compose.tnt_fraction"]:
        rows = compose_indices(tnt, n, fraction, seed=0)
        assert len(rows) == n and tnt[rows].sum() == round(n * fraction)
