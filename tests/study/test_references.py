"""The launch run's room-to-improve references (fairl.study.references): one oracle per value
of a searched world option (its r* may change with it), cached by content."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from study_support import write_study
from test_sir import _samples

from fairl.data.sir import SirOptions, sir_world
from fairl.reference import oracle_starc
from fairl.study import references
from fairl.study.references import option_oracles, reference_metrics
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


def test_options_that_keep_r_star_get_no_oracle_of_their_own(monkeypatch):
    """SIR: another β draws other pairs from the same r* (no new oracle); another m is another
    r* (its own oracle)."""
    samples = _samples(bend=1.5)

    def toy(name, options):
        return sir_world(samples, SirOptions(**options), {"pairset": "toy"})

    monkeypatch.setattr(references, "load_world", toy)
    base = toy("sir", {"beta": 0.5})
    values = option_oracles({"name": "sir", "options": {"beta": 0.5}},
                            {"beta": [0.5, 1.0], "misspecification": [0.0, 1.0]}, base)
    assert list(values) == ["reference_oracle_test_starc/misspecification:1.0"]
    world = toy("sir", {"beta": 0.5, "misspecification": 1.0})
    assert values["reference_oracle_test_starc/misspecification:1.0"] == pytest.approx(
        oracle_starc(world.train, world.test).starc) and 0.05 < min(values.values())
