"""The suite on any world (issue 24): `fairl demo --world SPEC` into its own experiments and
report folder, your own pairs from `fairl world import` included; runs of two worlds are never
one table; the default world's names (and stores made before world tags) still report."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from study_support import trial_runs, use_store

from fairl.cli import main

ROOT = Path(__file__).resolve().parents[2]
NICE = ["thanks for the lovely evening", "the garden looks wonderful today",
        "a calm and friendly answer", "we enjoyed the film a lot"]
RUDE = ["you stupid idiot", "shut up you moron", "this is damn crap", "what a dumb loser"]


def write_pairs(path: Path, n: int) -> Path:
    """n rows, one per prompt; the base output is rude in two rows of five (T→NT pairs)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "o_T", "o_NT"])
        for i in range(n):
            base = RUDE[i % 4] if i % 5 < 2 else NICE[(i + 2) % 4]
            writer.writerow([f"prompt number {i}: say something",
                             f"{NICE[i % 4]} ({i})", f"{base} ({i})"])
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_imported_pairs_get_the_suite_in_their_own_experiments(tmp_path, monkeypatch, capsys,
                                                               tmp_path_factory):
    store = use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mine = tmp_path / "worlds" / "mine"
    assert main(["world", "import", str(write_pairs(tmp_path / "pairs.csv", 100)),
                 "--out", str(mine)]) == 0
    spec = f"pairset:path={mine}"
    reports = tmp_path / "reports"
    assert main(["demo", "--world", spec, "--trials", "2", "--out", str(reports)]) == 0
    out = capsys.readouterr().out
    for study in ("identifiability", "regime_map"):  # one pair per prompt: no SIR pools
        assert f"{study}: skipped on mine: the SIR construction needs >= 2 base samples" in out
    assert "tnt_fraction: world.compose.n 600 -> " in out
    for study in ("main_table", "ablation_no_rf", "ablation_fixed_lambda",
                  "ablation_failure_source", "tnt_fraction", "fa_sweep"):
        runs = trial_runs(uri, f"{study}@mine", "FINISHED")
        assert len(runs) == 2 and {run.data.tags["world_id"] for run in runs} == {"mine"}
    assert not trial_runs(uri, "main_table")  # the default world's experiment is untouched
    report = (reports / "REPORT.md").read_text()
    assert "World: `mine`" in report and "## Main table: standard IRL vs FA-IRL" in report
    skipped = [line for line in report.splitlines()  # "Not built yet" (the ledger says it too)
               if line.startswith("* ") and "skipped on mine: the SIR construction" in line]
    assert len(skipped) == 1 and {"identifiability", "regime_map", "misspecification"} <= set(
        skipped[0].removeprefix("* ").partition(":")[0].split(", ")), skipped
    assert (reports / "figures" / "tnt_fraction.png").is_file()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sir_world_main_table_runs_and_reports_in_its_own_experiment(tmp_path, monkeypatch,
                                                                    capsys, tmp_path_factory):
    store = use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())
    uri = f"sqlite:///{store / 'mlflow.db'}"
    assert main(["demo", "--world", "sir:beta=0.5", "--studies", "main_table", "--trials", "2",
                 "--out", str(tmp_path / "reports" / "sir,beta=0.5")]) == 0
    runs = trial_runs(uri, "main_table@sir,beta=0.5", "FINISHED")
    assert len(runs) == 2 and not trial_runs(uri, "main_table")
    for run in runs:
        assert run.data.tags["world_id"] == "sir,beta=0.5"
        assert run.data.params["world.name"] == "sir"
        assert run.data.params["world.options.beta"] == "0.5"
    table = tmp_path / "reports" / "sir,beta=0.5" / "tables" / "main_table.md"
    assert table.is_file() and "STARC" in table.read_text()
    out = capsys.readouterr().out
    assert "fairl report --world sir:beta=0.5" in out
    assert "run: fairl study run studies/ablation_no_rf.yaml --world sir:beta=0.5" in out


@pytest.mark.timeout(300)
def test_a_store_made_before_world_tags_still_reports_and_mixed_worlds_do_not(
        tmp_path, monkeypatch, capsys, tmp_path_factory):
    """The default world's experiment names are the study names, and runs without world_id /
    world_hash tags (every store before this change) report as before; runs of two world
    hashes in one experiment (a world whose content changed under the study) are refused."""
    from fairl.runs.store import client
    from fairl.study.runner import run_study

    store = use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())
    uri = f"sqlite:///{store / 'mlflow.db'}"
    studies = tmp_path / "studies"
    studies.mkdir()
    study = yaml.safe_load((ROOT / "studies" / "main_table.yaml").read_text())
    study.update(world={"name": "planted", "options": {"n_train": 200, "n_test": 100, "d": 8}},
                 fit={"rounds": 5}, seeds=[0, 1])
    (studies / "main_table.yaml").write_text(yaml.safe_dump(study))
    assert run_study(studies / "main_table.yaml", trials=2, progress=False).status == "FINISHED"
    runs = trial_runs(uri, "main_table", "FINISHED")
    assert len(runs) == 2 and {run.data.tags["world_id"] for run in runs} == {"default"}
    for run in trial_runs(uri, "main_table"):
        for tag in ("world_id", "world_hash"):
            client(uri).delete_tag(run.info.run_id, tag)
    out = tmp_path / "reports"
    assert main(["report", "--studies", str(studies), "--only", "main_table",
                 "--out", str(out)]) == 0
    assert (out / "tables" / "main_table.md").is_file()

    first, second = trial_runs(uri, "main_table", "FINISHED")
    client(uri).set_tag(first.info.run_id, "world_hash", "sha256:before")
    client(uri).set_tag(second.info.run_id, "world_hash", "sha256:after")
    capsys.readouterr()
    assert main(["report", "--studies", str(studies), "--only", "main_table",
                 "--out", str(tmp_path / "mixed")]) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines()
               if line.startswith("main_table:")]
    assert line == ("main_table: refused: experiment 'main_table' holds runs of 2 different "
                    "worlds (world_hash sha256:after (1 run), sha256:before (1 run)); one "
                    "table takes one world: rerun the study under a new name, or delete the "
                    "other world's runs")
    assert not (tmp_path / "mixed" / "tables" / "main_table.md").exists()
