"""fairl.study.worlds: --world SPECs checked at the edge, world ids and hashes, studies on a world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fairl.config import ConfigError
from fairl.paths import DEFAULT_WORLD_DIR
from fairl.runs.read import MixedWorlds, TrialRun, check_one_world
from fairl.study.worlds import (
    StudySkipped,
    experiment_name,
    parse_world,
    report_dir,
    rerlhf_on_world,
    study_on_world,
    world_hash,
)

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "studies"


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """A PairSet with one pair per prompt (as an imported CSV has), scored by profanity only."""
    from fairl.data.pairset import PairSet

    rows = [{"prompt": f"prompt {i}", "o_T": f"a kind answer {i}",
             "o_NT": f"you stupid idiot {i}" if i % 3 == 0 else f"a plain answer {i}"}
            for i in range(80)]
    folder = tmp_path_factory.mktemp("single") / "mine"
    PairSet.build(rows, judges=["profanity"], name="pairs").save(folder)
    return folder


@pytest.mark.parametrize(("spec", "field"), [
    ("sir:beta=-1", "options.beta"), ("sir:bta=1", "options.bta"), ("nope", "name"),
    ("pairset", "options.path"), ("pairset:path=/no/such/folder", "options.path"),
    ("sir:beta", "'beta'"), ("planted:d=1", "options.d")])
def test_bad_specs_are_one_line_naming_the_field(spec, field):
    with pytest.raises(ConfigError) as caught:
        parse_world(spec)
    message = str(caught.value)
    assert message.startswith(f"--world {spec}: ") and field in message
    assert "\n" not in message


def test_world_ids_name_the_world_and_its_non_default_options(single):
    assert parse_world("default").id == "default" and parse_world("default").is_default
    assert parse_world("sir:beta=0.5").id == "sir,beta=0.5"
    assert parse_world("sir:beta=1.0").id == "sir"  # the default β: the same world
    assert parse_world(f"pairset:path={single}").id == "mine"
    assert parse_world(f"pairset:path={single},encoder=minilm,device=cpu").id == "mine"
    assert parse_world(f"pairset:path={single},encoder=smollm2-meanpool").id == \
        "mine,encoder=smollm2-meanpool"
    assert parse_world("planted:d=8,n_train=300").id == "planted,d=8,n_train=300"


def test_a_yaml_spec_holds_a_world_block_and_may_name_its_id(tmp_path, single):
    spec = tmp_path / "mine_world.yaml"
    spec.write_text(yaml.safe_dump({"id": "my-pairs", "name": "pairset",
                                    "options": {"path": str(single)}}))
    world = parse_world(str(spec))
    assert world.id == "my-pairs" and world.block == {"name": "pairset",
                                                      "options": {"path": str(single)}}
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump({"world": {"name": "sir", "options": {"beta": 0.5}}}))
    assert parse_world(str(study_file)).id == "sir,beta=0.5"  # a study's own world block
    for bad, field in (({"name": "sir", "compose": {"n": 5}}, "compose"),
                       ({"id": "a/b", "name": "sir"}, "id"),
                       ({"id": "default", "name": "sir"}, "id")):
        spec.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=field):
            parse_world(str(spec))


def test_default_world_keeps_todays_experiment_names_and_report_folder():
    raw, notes = study_on_world(STUDIES / "main_table.yaml", None)
    assert "name" not in raw and notes == []  # the experiment is still `main_table`
    assert raw["world"] == {"name": "default"}
    assert raw["tags"]["world_id"] == "default"
    assert raw["tags"]["world_hash"] == world_hash({"name": "default"})
    assert study_on_world(STUDIES / "main_table.yaml", parse_world("default"))[0] == raw
    assert experiment_name("main_table", None) == experiment_name("main_table", "default") \
        == "main_table"
    assert report_dir(Path("reports"), "default") == Path("reports")
    assert experiment_name("main_table", "mine") == "main_table@mine"
    assert report_dir(Path("reports"), "mine") == Path("reports/mine")


def test_world_hash_is_content_not_spelling(single, tmp_path):
    import shutil

    copy = tmp_path / "elsewhere"
    shutil.copytree(single, copy)
    assert world_hash({"name": "pairset", "options": {"path": str(single)}}) == world_hash(
        {"name": "pairset", "options": {"path": str(copy), "encoder": "minilm", "device": "auto"}})
    assert world_hash({"name": "pairset", "options": {"path": str(single)}}) != world_hash(
        {"name": "pairset", "options": {"path": str(single), "encoder": "smollm2-meanpool"}})
    card = json.loads((copy / "card.json").read_text())
    card["content_hash"] = "sha256:other"
    (copy / "card.json").write_text(json.dumps(card))
    assert world_hash({"name": "pairset", "options": {"path": str(copy)}}) != world_hash(
        {"name": "pairset", "options": {"path": str(single)}})


def test_studies_on_another_world_get_its_block_name_and_tags(single):
    world = parse_world("sir:beta=0.5")
    raw, _ = study_on_world(STUDIES / "main_table.yaml", world)
    assert raw["name"] == "main_table@sir,beta=0.5"
    assert raw["world"] == {"name": "sir", "options": {"beta": 0.5}}
    assert raw["tags"]["world_id"] == "sir,beta=0.5"
    # SIR studies keep their own SIR options under the given world's
    raw, _ = study_on_world(STUDIES / "identifiability.yaml", parse_world("sir:pairs_per_prompt=2"))
    assert raw["world"]["options"] == {"beta": 0.5, "pairs_per_prompt": 2}
    assert raw["world"]["compose"] == {"n": 1000, "tnt_fraction": 0.05}
    # ... and run the SIR construction over a PairSet world with >= 2 samples per prompt
    raw, _ = study_on_world(STUDIES / "regime_map.yaml",
                            parse_world(f"pairset:path={DEFAULT_WORLD_DIR}"))
    assert raw["world"]["name"] == "sir" and raw["world"]["options"]["path"] == \
        str(DEFAULT_WORLD_DIR) and raw["world"]["options"]["pairs_per_prompt"] == 8


def test_sir_studies_are_skipped_with_a_reason_where_sir_cannot_run(single):
    with pytest.raises(StudySkipped, match=r">= 2 base samples per prompt.*at most 1"):
        study_on_world(STUDIES / "identifiability.yaml", parse_world(f"pairset:path={single}"))
    with pytest.raises(StudySkipped, match="planted world has none"):
        study_on_world(STUDIES / "regime_map.yaml", parse_world("planted:d=8"))
    with pytest.raises(StudySkipped, match="not smollm2-meanpool"):
        study_on_world(STUDIES / "identifiability.yaml", parse_world(
            f"pairset:path={DEFAULT_WORLD_DIR},encoder=smollm2-meanpool"))


def test_composed_training_sets_shrink_to_what_the_world_holds(single):
    card = json.loads((single / "card.json").read_text())
    tnt = card["transitions"]["train"]["T->NT"]
    others = card["sizes"]["train"]["pairs"] - tnt
    raw, notes = study_on_world(STUDIES / "tnt_fraction.yaml", parse_world(f"pairset:path={single}"))
    n = raw["world"]["compose"]["n"]
    assert n == min(tnt, others) and 10 <= n < 600  # fractions 0 and 1: all of one kind
    assert notes == [(f"tnt_fraction: world.compose.n 600 -> {n}: the training split has {tnt} "
                     f"T→NT of {tnt + others} pairs (fractions 0..1)")]


def test_rerlhf_follows_the_worlds_base_lm_and_reward(single):
    raw = rerlhf_on_world(STUDIES / "rerlhf" / "rerlhf.yaml",
                          parse_world(f"pairset:path={DEFAULT_WORLD_DIR},device=cpu"))
    assert raw["name"] == "rerlhf@default_world"  # the PairSet folder's name
    assert raw["base_model"] == "smollm2-135m-instruct" and raw["device"] == "cpu"
    assert raw["sources"]["ground_truth"]["scorer"] == "profanity"
    assert raw["rlhf"]["lora_targets"][0] == "q_proj"
    with pytest.raises(StudySkipped, match="models.base"):
        rerlhf_on_world(STUDIES / "rerlhf" / "rerlhf.yaml", parse_world(f"pairset:path={single}"))
    assert rerlhf_on_world(STUDIES / "rerlhf" / "rerlhf.yaml", None)["name"] == "rerlhf"


def _run(world_hash_tag: str | None) -> TrialRun:
    tags = {"world_hash": world_hash_tag} if world_hash_tag else {}
    return TrialRun("r", "n", 0, 0, {}, {}, tags, "", "0")


def test_runs_of_two_world_hashes_are_refused_in_one_line():
    check_one_world("main_table", [_run("sha256:a"), _run("sha256:a"), _run(None)])
    with pytest.raises(MixedWorlds) as caught:
        check_one_world("main_table", [_run("sha256:a"), _run("sha256:b"), _run(None)])
    assert "\n" not in str(caught.value) and "2 different worlds" in str(caught.value)
