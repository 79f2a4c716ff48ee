"""The launch run's room-to-improve references (fairl.study.references): one oracle per value
of a searched world option (its r* may change with it), cached by content."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from study_support import write_study

from fairl.reference import oracle_starc
from fairl.study.references import reference_metrics
from fairl.study.spec import load_study
from fairl.worlds import load_world

WORLD = {"name": "planted", "options": {"n_train": 300, "n_test": 200, "d": 8,
                                        "label_noise": 0.1}}


@pytest.mark.timeout(120)
def test_a_searched_world_option_gets_the_oracle_of_each_value(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRL_CACHE", str(tmp_path / "cache"))
    path = write_study(tmp_path, "per_option", world=WORLD,
                       search={"world.options.seed": [0, 1], "objective": ["max_margin"]})
    values = reference_metrics(load_study(path).spec)
    for seed in (0, 1):
        world = load_world("planted", {**WORLD["options"], "seed": seed})
        assert values[f"reference_oracle_test_starc/seed:{seed}"] == pytest.approx(
            oracle_starc(world.train, world.test).starc)
    assert values["reference_oracle_test_starc/seed:0"] != values[
        "reference_oracle_test_starc/seed:1"]
    assert len(list((tmp_path / "cache" / "reference").glob("*.json"))) == 1
    assert reference_metrics(load_study(path).spec) == values  # read back from the cache
