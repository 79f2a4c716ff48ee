"""The paper's setting rehearsed end to end (issue 24): configs/world_paper.yaml itself, with only
its hub ids and sizes overridden, built from tiny stand-ins of its hub inputs of the same
classes (GPT-NeoX, RoBERTa classifier, RTP records; tests/paper_standins.py), killed by SIGTERM
in RLHF and in generation and resumed, then `fairl paper` (the suite and its report),
re-RLHF and `fairl report` on the result through `--world`. Nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from paper_standins import build_standins, paper_sets
from study_support import trial_runs, use_store

from fairl.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "world_paper.yaml")
HOOKS = ROOT / "tests" / "fault_hooks"


def _build(sets: list[str], out: Path, cache: Path, log: Path, fault: str = "") -> int:
    """`fairl world build --config configs/world_paper.yaml --set ...` as its own process."""
    path = os.pathsep.join([str(HOOKS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "FAIRL_CACHE": str(cache), "FAIRL_BUILD_FAULT_LOG": str(log),
           "FAIRL_BUILD_FAULT": fault, "PYTHONPATH": path}
    args = [arg for item in sets for arg in ("--set", item)]
    done = subprocess.run([sys.executable, "-m", "fairl", "world", "build", "--config", CONFIG,
                           *args, "--out", str(out)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode in (0, -signal.SIGTERM), done.stderr[-3000:]
    return done.returncode


def _lines(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_paper_setting_rehearsed_end_to_end(tmp_path, monkeypatch, tmp_path_factory, capsys):
    from fairl.runs.store import client

    store = use_store(monkeypatch, tmp_path, tmp_path_factory.getbasetemp())  # builds log here too
    times: dict[str, float] = {}
    started = time.perf_counter()
    standins = build_standins(tmp_path / "standins")
    sets = paper_sets(standins)
    times["stand-ins"] = time.perf_counter() - started

    # Uninterrupted build A; build B killed in RLHF (step 3, checkpoint at 2), then in
    # generation (its second chunk), then finished: same content hash.
    started = time.perf_counter()
    assert _build(sets, tmp_path / "A", tmp_path / "cache-A", tmp_path / "log-A") == 0
    times["build, uninterrupted"] = time.perf_counter() - started
    stage = next((tmp_path / "cache-B").glob("worlds/paper-*"), None)
    assert stage is None
    started = time.perf_counter()
    assert _build(sets, tmp_path / "B", tmp_path / "cache-B", tmp_path / "log-1",
                  "term_in_rlhf:3") == -signal.SIGTERM
    stage = next((tmp_path / "cache-B").glob("worlds/paper-*"))
    assert _lines(tmp_path / "log-1") == ["rlhf 0", "rlhf 1", "rlhf 2"]
    assert (stage / "rlhf" / "checkpoint.pt").exists()
    assert not (stage / "rlhf" / "result.json").exists()
    assert _build(sets, tmp_path / "B", tmp_path / "cache-B", tmp_path / "log-2",
                  "term_in_generation:1") == -signal.SIGTERM
    assert _lines(tmp_path / "log-2") == ["rlhf 2", "rlhf 3", "generate 0"]  # from step 2
    assert (stage / "rlhf" / "result.json").exists() and not (tmp_path / "B").exists()
    assert _build(sets, tmp_path / "B", tmp_path / "cache-B", tmp_path / "log-3") == 0
    resumed = _lines(tmp_path / "log-3")
    assert resumed[0] == "generate 4" and not any(line.startswith("rlhf") for line in resumed)
    times["build, killed twice and resumed"] = time.perf_counter() - started
    card = json.loads((tmp_path / "B" / "card.json").read_text())
    assert card["content_hash"] == json.loads((tmp_path / "A" / "card.json").read_text())[
        "content_hash"]
    assert card["models"]["rlhf"]["lora_targets"] == ["query_key_value", "dense",
                                                      "dense_h_to_4h", "dense_4h_to_h"]
    judge = f"hub:{standins['roberta']}"
    assert card["labelling"]["reward_scorer"] == judge
    assert card["build_config"]["judges"] == [judge, "bilstm"]
    assert card["models"]["base"] == str(standins["pythia"])
    assert card["transitions"]["all"]["T->NT"] > 0  # r* (the RoBERTa) labels both ways

    # The suite and its report: `fairl paper` finds the world built and runs on it.
    monkeypatch.setenv("FAIRL_CACHE", str(tmp_path / "cache-B"))
    started = time.perf_counter()
    args = [arg for item in sets for arg in ("--set", item)]
    reports = tmp_path / "reports"
    assert main(["paper", "--config", CONFIG, *args, "--world-dir", str(tmp_path / "B"),
                 "--studies", "main_table", "--out", str(reports)]) == 0
    times["fairl paper --studies main_table (suite + report)"] = time.perf_counter() - started
    out = capsys.readouterr().out
    assert "world paper: built at" in out and "reused" in out
    uri = f"sqlite:///{store / 'mlflow.db'}"
    builds = client(uri).get_experiment_by_name("world_build")
    assert len(client(uri).search_runs([builds.experiment_id])) == 2  # the two finished builds
    runs = trial_runs(uri, "main_table@paper", "FINISHED")
    assert len(runs) == 4
    assert {run.data.tags["world_id"] for run in runs} == {"paper"}
    assert {run.data.tags["dataset_hash"] for run in runs} == {card["content_hash"]}
    assert len({run.data.tags["world_hash"] for run in runs}) == 1
    assert {run.data.params["world.options.encoder"] for run in runs} == {"base-meanpool"}
    report = (reports / "REPORT.md").read_text()
    assert "World: `paper`" in report and "## Main table: standard IRL vs FA-IRL" in report

    # Re-RLHF of the GPT-NeoX base on the world (the smoke study's r* and FA-IRL sources),
    # and the report again, through --world.
    spec = str(tmp_path / "B" / "world.yaml")
    smoke = yaml.safe_load((ROOT / "studies" / "rerlhf" / "rerlhf_smoke.yaml").read_text())
    smoke["sources"] = {name: smoke["sources"][name] for name in ("ground_truth", "fa_irl")}
    studies = tmp_path / "studies"
    (studies / "rerlhf").mkdir(parents=True)  # where the report's re-RLHF item looks
    (studies / "rerlhf" / "rerlhf.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    started = time.perf_counter()
    assert main(["rerlhf", "run", str(studies / "rerlhf" / "rerlhf.yaml"), "--world", spec]) == 0
    times["re-RLHF smoke, r* and FA-IRL sources"] = time.perf_counter() - started
    experiment = client(uri).get_experiment_by_name("rerlhf_smoke@paper")
    policies = client(uri).search_runs([experiment.experiment_id], "tags.kind = 'policy'")
    assert sorted(run.info.status for run in policies) == ["FINISHED"] * 2
    for run in policies:  # GPT-NeoX's LoRA targets, from the card; r* = the world's RoBERTa
        assert "dense_h_to_4h" in run.data.params["rlhf.lora_targets"]
        assert run.data.params["base_model"] == card["models"]["base"]
        assert f"tox_rate_{judge}" in run.data.metrics and "r_star_mean" in run.data.metrics
    (truth,) = [run for run in policies if run.data.tags["source"] == "ground_truth"]
    assert truth.data.tags["reward_origin"] == f"r* = log-odds non-toxic by {judge}"
    # The report's "r* scorer" columns read the world's r* (the RoBERTa), not profanity.
    assert main(["report", "--world", spec, "--studies", str(studies), "--out",
                 str(tmp_path / "rerlhf-report"), "--only", "rerlhf"]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "rerlhf-report" / "tables" / "rerlhf.csv")
    assert "tox_rate_profanity_mean" not in table
    by_source = {run.data.tags["source"]: run.data.metrics for run in policies}
    for row in table.to_dict("records"):
        assert row[f"tox_rate_{judge}_mean"] == by_source[row["source"]][f"tox_rate_{judge}"]
    started = time.perf_counter()
    assert main(["report", "--world", spec, "--out", str(tmp_path / "again"),
                 "--only", "main_table"]) == 0
    times["fairl report --world"] = time.perf_counter() - started
    for table in ("main_table.md", "main_table.csv"):
        assert (tmp_path / "again" / "tables" / table).read_bytes() == \
            (reports / "tables" / table).read_bytes()
    with capsys.disabled():
        print("\nrehearsal stage times (s, this machine): "
              + ", ".join(f"{name} {seconds:.1f}" for name, seconds in times.items()))
