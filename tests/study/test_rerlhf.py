"""fairl.study.rerlhf: reward sources, study files, and a tiny real re-RLHF study on SmolLM2 run
through the study runner into a temporary MLflow store (ground truth lowers toxicity; curves,
FAILED cells, cells the old grid loop finished reused, the launch's verdicts, the report's
re-RLHF tables and figure), and a launch killed in RLHF on a tiny GPT-NeoX, resumed."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from study_support import CLEAN, TOXIC, fresh_store, make_rerlhf_world, neox_study

from fairl.config import ConfigError
from fairl.runs import store as runs_store
from fairl.runs import write
from fairl.study import rerlhf, rerlhf_eval, rerlhf_spec

ROOT = Path(__file__).resolve().parents[2]

TINY_RLHF = {"steps": 6, "prompts_per_step": 4, "samples_per_prompt": 4, "max_new_tokens": 12,
             "lr": 1.0e-3, "kl_beta": 0.1, "micro_batch_size": 16, "sample_batch_size": 16,
             "checkpoint_every": 3}


def study_dict(world_path: Path, **changes) -> dict:
    study = {
        "name": "rerlhf",
        "world": {"name": "pairset", "options": {"path": str(world_path)}},
        "fit": {"rounds": 30},
        "sources": {"none": {"kind": "base"},
                    "ground_truth": {"kind": "scorer", "scorer": "profanity"},
                    "standard_irl": {"kind": "irl",
                                     "fit": {"failure_mode": "none", "dual_path": False}},
                    "fa_irl": {"kind": "irl", "fit": {}},
                    "broken": {"kind": "irl", "run_id": "no-such-run"}},
        "seeds": [0],
        "rlhf": TINY_RLHF,
        "train_prompts": {"split": "train", "kind": "toxic"},
        # The acceptance test: toxicity on the training prompts themselves, 8 samples each.
        "eval": {"prompts": {"split": "train", "kind": "toxic"}, "samples": 8,
                 "max_new_tokens": 12, "seed": 77},
    }
    study.update(changes)
    return study


def write_study(folder: Path, study: dict) -> Path:
    path = folder / "rerlhf" / "rerlhf.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path



@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_rerlhf_world(tmp_path_factory.mktemp("world") / "pairs")


# --- fast ----------------------------------------------------------------------------------


def test_study_files_validate():
    from fairl.paths import DEFAULT_WORLD_DIR

    if not (DEFAULT_WORLD_DIR / "card.json").exists():
        pytest.skip("the default world is not built (fairl world build)")
    for name in ("rerlhf", "rerlhf_smoke"):
        study = rerlhf_spec.load_study(ROOT / "studies" / "rerlhf" / f"{name}.yaml")
        assert study.name == name
        assert set(study.spec.sources) == {"none", "ground_truth", "standard_irl", "fa_irl"}
        assert len(study.cells()) == 4 * len(study.spec.seeds)
        assert study.spec.train_prompts.split == "train" and study.spec.eval.prompts.split == "test"
        assert rerlhf_spec.world_prompts(study.world_path, study.spec.eval.prompts)
    study = rerlhf_spec.load_study(ROOT / "studies" / "rerlhf" / "rerlhf.yaml")
    assert len(study.spec.seeds) >= 3 and study.rlhf_config(0).steps >= 20


@pytest.mark.parametrize("change, message", [
    ({"world": {"name": "planted"}}, "text world"),
    ({"rlhf": {**TINY_RLHF, "seed": 3}}, "list the seeds"),
    ({"rlhf": {**TINY_RLHF, "steps": 0}}, "RLHFConfig.steps"),
    ({"sources": {"x": {"kind": "irl", "fit": {}, "path": "r.npz"}}}, "one of fit / run_id"),
    ({"sources": {"x": {"kind": "scorer", "fit": {}}}}, "only for kind irl"),
    ({"sources": {"x": {"kind": "irl", "fit": {"M_fail": 0.5}}}}, "sources.x.fit"),
    ({"seeds": [1, 1]}, "distinct"),
])
def test_bad_study_files_name_the_field(tmp_path, world, change, message):
    with pytest.raises(ConfigError, match=message):
        rerlhf_spec.load_study(write_study(tmp_path, study_dict(world, **change)))


def test_irl_reward_scores_texts_like_the_fit_result(tmp_path, world):
    """A saved FitResult, as a text reward, equals FitResult.reward(encode(texts)); the same
    heads arrive through a `path:` source and through a study trial's rewards.npz."""
    import dataclasses

    from fairl.irl import FitConfig, FitResult, fit
    from fairl.lm.encode import encode
    from fairl.worlds import load_world

    pairs = load_world("pairset", {"path": str(world)}).train
    fit(pairs.h_T, pairs.h_NT, FitConfig(rounds=30, seed=1)).save(tmp_path / "heads.npz")
    fitted = FitResult.load(tmp_path / "heads.npz")
    texts = CLEAN + TOXIC + ["", "an unrelated sentence about the weather"]
    expected = fitted.reward(encode(texts, "minilm", progress=False))
    reward = rerlhf_eval.EmbeddingReward(fitted)
    np.testing.assert_allclose(reward(texts), expected, rtol=1e-5, atol=1e-5)
    assert reward(CLEAN).mean() > reward(TOXIC).mean()  # it learned the world's preference

    study = rerlhf_spec.load_study(write_study(tmp_path, study_dict(world, sources={
        "from_file": {"kind": "irl", "path": str(tmp_path / "heads.npz")}})))
    from_file = rerlhf_eval.make_reward(study, "from_file", 0, "sqlite:///unused.db")
    np.testing.assert_allclose(from_file.fn(texts), expected, rtol=1e-5, atol=1e-5)
    assert from_file.reward_id == reward.id and "reward.npz" in from_file.artifacts
    assert {"reward_test_f1", "reward_test_starc"} <= set(from_file.metrics)

    uri = fresh_store(tmp_path / "store", tmp_path.parent)
    run = write.start_run(uri, runs_store.experiment_id(uri, "irl"), "trial", {"kind": "trial"})
    write.log_run(uri, run, params=write.flatten({"fit": dataclasses.asdict(fitted.config)}))
    write.log_text(uri, run, write.rewards_npz({1: fitted}, pairs), "rewards.npz")
    write.end_run(uri, run)
    study = rerlhf_spec.load_study(write_study(tmp_path, study_dict(world, sources={
        "from_run": {"kind": "irl", "run_id": run, "reward_seed": 1}})))
    from_run = rerlhf_eval.make_reward(study, "from_run", 0, uri)
    np.testing.assert_allclose(from_run.fn(texts), expected, rtol=1e-5, atol=1e-5)
    assert from_run.tags["reward_run_id"] == run

    # A trial logged with its reward model (no rewards.npz): the heads come through the model.
    from fairl.models import log_reward_model

    modelled = write.start_run(uri, runs_store.experiment_id(uri, "irl"), "trial",
                               {"kind": "trial"})
    write.log_run(uri, modelled, params=write.flatten({"fit": dataclasses.asdict(fitted.config)}),
                  tags={"reward_model_uri": log_reward_model(uri, modelled, {1: fitted}, 1,
                                                             "minilm", texts[:2])})
    write.end_run(uri, modelled)
    study = rerlhf_spec.load_study(write_study(tmp_path, study_dict(world, sources={
        "from_model": {"kind": "irl", "run_id": modelled, "reward_seed": 1}})))
    from_model = rerlhf_eval.make_reward(study, "from_model", 0, uri)
    np.testing.assert_allclose(from_model.fn(texts), expected, rtol=1e-5, atol=1e-5)
    assert from_model.reward_id == reward.id


def test_diversity_guards():
    assert rerlhf_eval.diversity(["a b a b a b"])["repetition"] == pytest.approx(1 - 2 / 5)
    assert rerlhf_eval.diversity(["a b c", "a b d"])["distinct_2"] == pytest.approx(3 / 4)
    assert rerlhf_eval.diversity(["", "x"]) == {"distinct_2": 0.0, "repetition": 0.0}


# --- slow: a real (tiny) study -------------------------------------------------------------


def legacy_cell(study, source: str, seed: int, uri: str) -> str:
    """A cell as re-RLHF's grid loop logged it before it ran as a study: a policy run with the
    same tags and no launch parent, no trial."""
    from fairl.runs.provenance import environment_tags, worker_identity

    tags = {**environment_tags(), **study.spec.tags, "kind": "policy", "study": study.name,
            "source": source, "source_kind": study.spec.sources[source].kind,
            "seed": str(seed), "world": study.spec.world["name"],
            "dataset_hash": study.dataset_hash, "config_hash": study.config_hash(source, seed),
            "study_fingerprint": study.settings_fingerprint(), "worker": worker_identity()}
    run_id = write.start_run(uri, runs_store.experiment_id(uri, study.name),
                             f"{source}-seed{seed}", tags)
    rerlhf.run_cell(study, source, seed, uri, run_id)
    write.end_run(uri, run_id)
    return run_id


def report(root: Path, uri: str, out: Path) -> int:
    from fairl.cli import main

    return main(["report", "--tracking-uri", uri, "--out", str(out), "--studies",
                 str(root / "studies"), "--only", "rerlhf"])


@pytest.fixture(scope="module")
def ran(tmp_path_factory, world):
    """A store with two cells logged as the grid loop did (none, ground truth), the report on
    it, then the tiny study (4 sources + a broken one, 1 seed) through the runner, twice."""
    import contextlib
    import io

    from fairl.study.runner import run_study

    root = tmp_path_factory.mktemp("rerlhf")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRL_MLRUNS", str(root / "default-mlruns"))  # never the repo's mlruns/
        uri = fresh_store(root / "mlruns", tmp_path_factory.getbasetemp())
        path = write_study(root / "studies", study_dict(world))
        study = rerlhf_spec.load_study(path)
        legacy = {source: legacy_cell(study, source, 0, uri) for source in ("none", "ground_truth")}
        legacy_report = report(root, uri, root / "legacy-report")
        storage = str(root / "optuna.journal")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            first = run_study(path, storage=storage, tracking_uri=uri, progress=False)
            again = run_study(path, storage=storage, tracking_uri=uri, progress=False)
        yield {"uri": uri, "path": path, "first": first, "again": again, "root": root,
               "legacy": legacy, "legacy_report": legacy_report, "storage": storage,
               "printed": printed.getvalue()}


def policy_runs_of(uri: str) -> list:
    client = runs_store.client(uri)
    experiment = client.get_experiment_by_name("rerlhf")
    return client.search_runs([experiment.experiment_id], "tags.kind = 'policy'")


def runs_by_source(uri: str) -> dict[str, object]:
    return {run.data.tags["source"]: run for run in policy_runs_of(uri)}


@pytest.mark.slow
def test_ground_truth_rerlhf_lowers_toxicity_on_training_prompts(ran):
    runs = runs_by_source(ran["uri"])
    base, trained = runs["none"].data.metrics, runs["ground_truth"].data.metrics
    # Same prompts, same sampling seeds: only the policy differs. Measured here: mean
    # toxicity 0.25 -> 0.09 by r*'s scorer and 0.25 -> 0.09 by the BiLSTM, perplexity 41 -> 52.
    assert trained["tox_mean_profanity"] < base["tox_mean_profanity"] - 0.05, (base, trained)
    assert trained["tox_mean_bilstm"] < base["tox_mean_bilstm"], (base, trained)
    assert trained["kl_to_base"] > 0 and base["kl_to_base"] == 0
    # Not by gibberish: fluency and length stay close to the base's.
    assert trained["ppl_base"] < 2 * base["ppl_base"] and trained["length_mean"] > 8


@pytest.mark.slow
def test_every_cell_is_a_trial_and_a_run_failures_and_earlier_cells_included(ran):
    import optuna

    from fairl.study.storage import open_storage

    uri, first = ran["uri"], ran["first"]
    # A FAILED cell fails its trial (counted done, not re-queued); the grid went on.
    assert first.status == "FINISHED" and first.target == 5, first
    assert (first.tally.complete, first.tally.failed) == (4, 1)
    trials = {(t.params["source"], t.params["seed"]): t for t in optuna.load_study(
        study_name="rerlhf", storage=open_storage(ran["storage"])).get_trials()}
    assert len(trials) == 5 and trials[("broken", 0)].state.name == "FAIL"
    # A run the store lacks is the file's error, not the store's: not re-queued as an outage.
    assert trials[("broken", 0)].user_attrs["fail_reason"].startswith(
        "ConfigError: sources: run_id 'no-such-run': no such run in ")
    assert "fail_store" not in trials[("broken", 0)].user_attrs
    # The cells the grid loop had finished complete from their runs, not retrained, and say so.
    for source, run_id in ran["legacy"].items():
        trial = trials[(source, 0)]
        assert trial.state.name == "COMPLETE" and trial.user_attrs["reused_run"]
        assert trial.user_attrs["mlflow_run_id"] == run_id
        assert f"{source} seed 0: run {run_id} already FINISHED this cell" in ran["printed"]
    runs = runs_by_source(uri)
    assert len(policy_runs_of(uri)) == 5  # the second launch made no run: nothing to redo
    assert ran["again"].status == "FINISHED" and ran["again"].tally.complete == 4
    assert runs["ground_truth"].info.run_id == ran["legacy"]["ground_truth"]
    client = runs_store.client(uri)
    for source in ("ground_truth", "standard_irl", "fa_irl"):
        run = runs[source]
        tags, metrics = run.data.tags, run.data.metrics
        assert run.info.status == "FINISHED" and tags["seed"] == "0" and tags["git_commit"]
        for curve in ("reward_mean", "kl", "tox_rate_bilstm", "tox_rate_profanity"):
            history = client.get_metric_history(run.info.run_id, f"curve/{curve}")
            assert [point.step for point in history] == list(range(1, 7)), curve
        for key in ("tox_rate_bilstm", "tox_mean_bilstm", "tox_rate_profanity", "kl_to_base",
                    "ppl_base", "length_mean", "distinct_2", "repetition"):
            assert math.isfinite(metrics[key]), key
        assert run.data.params["rlhf.steps"] == "6"
    for source in ("standard_irl", "fa_irl", "broken"):  # trained by the runner: its trials
        tags = runs[source].data.tags
        assert tags["mlflow.parentRunId"] == first.launch_run
        assert trials[(source, 0)].user_attrs["mlflow_run_id"] == runs[source].info.run_id
        assert tags["trial_number"] == str(trials[(source, 0)].number)
        assert tags["optuna_study"] == "rerlhf" and tags["r_star_scorer"] == "profanity"
        if source != "broken":
            assert tags["reward_method"] == source and tags["reward_fit_hash"]
            assert "reward_test_f1" in runs[source].data.metrics
            assert trials[(source, 0)].value == runs[source].data.metrics["tox_rate_bilstm"]
    assert "mlflow.parentRunId" not in runs["none"].data.tags  # the grid loop's, reused
    # Equal budget and evaluation: the trained sources share every rlhf.* and eval.* param.
    shared = [{k: v for k, v in runs[s].data.params.items() if k.startswith(("rlhf.", "eval."))}
              for s in ("ground_truth", "standard_irl", "fa_irl")]
    assert shared[0] == shared[1] == shared[2]
    broken = runs["broken"]
    assert broken.info.status == "FAILED" and "error" in broken.data.tags
    status = rerlhf.status_table(ran["path"], uri)
    assert "FAILED" in status and status.count("FINISHED") == 4
    from fairl.study.status import study_status

    assert "rerlhf: 5/5 done (4 complete, 1 failed)" in study_status(str(ran["path"]),
                                                                      ran["storage"])


@pytest.mark.slow
def test_launch_run_holds_prompt_clustered_verdicts(ran):
    import json

    client = runs_store.client(ran["uri"])
    launch = client.get_run(ran["first"].launch_run)
    rows = json.loads(Path(client.download_artifacts(
        launch.info.run_id, "verdicts.json", str(ran["root"] / "verdicts"))).read_text())["rows"]
    pairs = {(row["label"], row["reference"], row["metric"]) for row in rows}
    assert pairs == {("fa_irl", reference, f"tox_rate_{judge}")
                     for reference in ("standard_irl", "ground_truth")
                     for judge in ("bilstm", "profanity")}
    runs = runs_by_source(ran["uri"])
    samples = 6 * 8  # the six toxic training prompts x 8 samples each
    for row in rows:
        assert row["n_prompts"] == 6 and row["n_seeds"] == 1 and row["n_boot"] == 5000
        assert row["ci_low"] <= row["difference"] <= row["ci_high"] and row["mde"] > 0
        a, b = (runs[name].data.metrics[row["metric"]] for name in ("fa_irl", row["reference"]))
        assert row["difference"] == pytest.approx(a - b)  # the cells' own rates
        assert row["a"] * samples == pytest.approx(round(row["a"] * samples))  # a share of 48
        key = f"verdict/fa_irl vs {row['reference']}/all/{row['metric']}"
        assert launch.data.metrics[f"{key}/difference"] == pytest.approx(row["difference"])
        assert launch.data.metrics[f"{key}/p_holm"] == pytest.approx(row["p_holm"])


@pytest.mark.slow
def test_claims_ledger_judges_rerlhf_toxicity_per_judge_from_the_samples(ran):
    """The ledger's re-RLHF claim: FA-IRL − standard IRL toxic rate per judge, the launch's
    prompt-clustered comparison (not a seeds-only mean), with the runs behind it."""
    import json

    from analysis.claims import ledger_rows
    from analysis.claims_cells import Ledger, rerlhf
    from fairl.report import Options

    options = Options(out=ran["root"] / "ledger", uri=ran["uri"],
                      studies_dir=ran["root"] / "studies")
    cells = rerlhf(Ledger(options))
    client = runs_store.client(ran["uri"])
    rows = json.loads(Path(client.download_artifacts(
        ran["first"].launch_run, "verdicts.json", str(ran["root"] / "ledger-verdicts"))
        ).read_text())["rows"]
    launch = {row["metric"]: row for row in rows if row["reference"] == "standard_irl"}
    runs = runs_by_source(ran["uri"])
    assert sorted(cell.condition.split(" (")[0] for cell in cells) == [
        "rerlhf: judge bilstm", "rerlhf: judge profanity"]
    for cell in cells:
        metric = "tox_rate_" + cell.condition.split()[2]
        assert cell.what == "FA-IRL vs standard IRL" and cell.comparison.lower_is_better
        assert cell.comparison.difference == pytest.approx(launch[metric]["difference"])
        assert cell.comparison.n_prompts == 6 and cell.comparison.mde > 0
        assert [run.run_id for run in cell.runs] == [runs["fa_irl"].info.run_id,
                                                     runs["standard_irl"].info.run_id]
    truth = runs["ground_truth"].data.metrics["tox_rate_bilstm"]
    assert any(f"r*'s own policy: {100 * truth:.1f} %" in cell.condition for cell in cells)
    # The whole ledger, as the report builds it, on a store with policy runs and no IRL
    # study: the re-RLHF row is judged (policy runs have no rewards.npz to digest), the
    # others are "not measured".
    rows, _ = ledger_rows(Ledger(options))
    row = next(row for row in rows if row.record["claim"] == "rerlhf")
    assert not row.verdict.startswith("not measured") and row.runs, row
    assert all(r.verdict.startswith("not measured") for r in rows
               if r.record["claim"] not in ("rerlhf", "theorem_1")), rows


@pytest.mark.slow
def test_report_has_the_rerlhf_tables_and_figure_old_stores_included(ran):
    import pandas as pd

    # The store the grid loop made (no launch run, no trial) reports through the same item.
    legacy = ran["root"] / "legacy-report"
    assert ran["legacy_report"] == 0
    assert list(pd.read_csv(legacy / "tables" / "rerlhf.csv")["source"]) == ["none",
                                                                              "ground_truth"]
    assert not (legacy / "tables" / "rerlhf.verdicts.csv").exists()  # no FA-IRL cell to compare

    out = ran["root"] / "reports"
    assert report(ran["root"], ran["uri"], out) == 0
    table = pd.read_csv(out / "tables" / "rerlhf.csv")
    assert list(table["source"]) == ["none", "ground_truth", "standard_irl", "fa_irl"]
    runs = runs_by_source(ran["uri"])
    for row in table.to_dict("records"):
        assert row["tox_rate_bilstm_mean"] == runs[row["source"]].data.metrics["tox_rate_bilstm"]
        assert row["tox_rate_profanity_mean"] == runs[row["source"]].data.metrics[
            "tox_rate_profanity"]
    markdown = (out / "tables" / "rerlhf.md").read_text()
    assert "ground truth r\\*" in markdown and "FA-IRL" in markdown
    for suffix in (".png", ".pdf"):
        assert (out / "figures" / f"rerlhf{suffix}").stat().st_size > 1000
    # The verdicts: the launch run's rows, rebuilt from the cells' samples.csv.
    verdicts = pd.read_csv(out / "tables" / "rerlhf.verdicts.csv")
    launch = runs_store.client(ran["uri"]).get_run(ran["first"].launch_run).data.metrics
    assert len(verdicts) == 4
    for row in verdicts.to_dict("records"):
        key = f"verdict/{row['label']} vs {row['reference']}/all/{row['metric']}"
        assert row["ci_low"] == pytest.approx(launch[f"{key}/ci_low"])
        assert row["ci_high"] == pytest.approx(launch[f"{key}/ci_high"])
    text = (out / "tables" / "rerlhf.verdicts.md").read_text()
    assert "FA-IRL − standard IRL" in text and "FA-IRL − ground truth r\\*" in text
    assert "Holm" in text and "MDE" in text


def test_rerlhf_run_is_study_run_and_says_only_is_gone(tmp_path, world, capsys):
    from fairl.cli import main

    path = write_study(tmp_path / "studies", study_dict(world))
    assert main(["rerlhf", "run", str(path), "--only", "fa_irl"]) == 2
    assert "--only / --seeds: dropped" in capsys.readouterr().err
    assert main(["study", "run", str(path), "--batch", "2"]) == 2  # a cell is not batched
    assert "--batch: must be in 1..1" in capsys.readouterr().err


# --- slow: the runner's machinery on a tiny GPT-NeoX base ------------------------------------

HOOKS = ROOT / "tests" / "fault_hooks"


@pytest.fixture(scope="module")
def neox(tmp_path_factory) -> Path:
    """A random-initialised GPT-NeoX (tests/paper_standins.py): RLHF steps in milliseconds."""
    from paper_standins import build_standins

    return build_standins(tmp_path_factory.mktemp("standins"), pythia_only=True)["pythia"]


def launch(study: Path, folder: Path, fault: str = "") -> subprocess.CompletedProcess:
    """`fairl study run` as its own process, with the fault hooks (tests/fault_hooks)."""
    env = {**os.environ, "FAIRL_MLRUNS": str(folder / "mlruns"),
           "FAIRL_CACHE": str(folder / "cache"), "FAIRL_BUILD_FAULT": fault, "FAIRL_BUILD_FAULT_LOG": str(folder / "steps.log"),
           "PYTHONPATH": os.pathsep.join([str(HOOKS), str(ROOT)]), "FAIRL_THREADS": "1"}
    for name in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "fairl", "study", "run", str(study),
                           "--no-progress"], env=env, cwd=folder, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_launch_killed_in_rlhf_resumes_the_cell_from_its_checkpoint(tmp_path, world, neox):
    folder = tmp_path / "host"
    folder.mkdir()
    study = write_study(tmp_path / "studies", neox_study(world, neox))
    log = folder / "steps.log"
    killed = launch(study, folder, "term_in_rlhf:3")  # SIGTERM as RLHF step 3 starts
    assert killed.returncode == 128 + signal.SIGTERM, killed.stdout + killed.stderr
    assert log.read_text().split() == ["rlhf", "0", "rlhf", "1", "rlhf", "2"]
    (checkpoint,) = (folder / "cache" / "rerlhf").glob("*/checkpoint.pt")  # after step 2
    from fairl.study.repair import repair_study
    from fairl.study.status import study_status

    storage = str(folder / "mlruns" / "optuna.journal")
    assert "1 waiting, 1 killed and re-queued" in study_status(str(study), storage)
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    assert "1 waiting; rerun" in repair_study(str(study), storage, uri)[-1]  # nothing to mend
    log.unlink()
    resumed = launch(study, folder)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert log.read_text().split() == ["rlhf", "2", "rlhf", "3"]  # from the checkpoint on
    assert not checkpoint.exists() and (checkpoint.parent / "result.json").exists()
    assert "rerlhf_neox: 2/2 done (2 complete, 0 failed)" in resumed.stdout

    client = runs_store.client(uri)
    experiment = client.get_experiment_by_name("rerlhf_neox")
    cells = [run for run in client.search_runs([experiment.experiment_id],
                                                "tags.source = 'ground_truth'")]
    (dead,) = [run for run in cells if run.info.status == "KILLED"]
    (done,) = [run for run in cells if run.info.status == "FINISHED"]
    assert "interrupted" in dead.data.tags["error"]
    assert dead.data.tags["mlflow.parentRunId"] != done.data.tags["mlflow.parentRunId"]
    assert int(done.data.tags["trial_number"]) > int(dead.data.tags["trial_number"])  # re-queued
    for curve in ("loss", "reward_mean", "tox_rate_profanity"):
        before, after = ({point.step: point.value for point in client.get_metric_history(
            run.info.run_id, f"curve/{curve}")} for run in (dead, done))
        assert sorted(before) == [1, 2, 3] and sorted(after) == [1, 2, 3, 4]
        # Steps 1-2 came back from the checkpoint; step 3 was replayed, sample for sample.
        assert [after[step] for step in (1, 2, 3)] == [before[step] for step in (1, 2, 3)], curve


@pytest.mark.slow
def test_study_best_of_a_rerlhf_grid_names_its_cell_and_policy_run(ran, capsys):
    from fairl.cli import main

    args = ["study", "best", str(ran["path"]), "--storage", ran["storage"],
            "--tracking-uri", ran["uri"]]
    assert main(args) == 0
    out = capsys.readouterr().out
    runs = runs_by_source(ran["uri"])
    rate = min(r.data.metrics["tox_rate_bilstm"] for s, r in runs.items() if s != "broken")
    assert f"tox_rate_bilstm={rate:.4f}" in out and "reward model" not in out, out
    source = out.split("(source ")[1].split(",")[0]  # the cell, and its run's id printed
    assert f"run {runs[source].info.run_id}\n  policy run: runs:/{runs[source].info.run_id} " in out
    assert main(args + ["--register"]) == 2  # a policy is no reward model: one line, no work
    assert "re-RLHF grid, whose trials are policies" in capsys.readouterr().err
