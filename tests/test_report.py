"""fairl report: small versions of every study run into a temporary store, the report built
from it, its numbers checked against mlflow.search_runs, missing studies named."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from study_support import fresh_store

from analysis import ITEMS
from fairl.cli import main
from fairl.runs import store as runs_store
from fairl.runs import write
from fairl.study.runner import run_study

ROOT = Path(__file__).resolve().parents[1]
WORLD = {"name": "planted", "options": {"n_train": 300, "n_test": 200, "d": 8,
                                        "near_tie_frac": 0.3, "hard_frac": 0.3,
                                        "label_noise": 0.05, "seed": 0,
                                        "max_pairs_per_prompt": 4}}  # prompts of 2-4 pairs
METHODS = {"standard_irl": {"failure_mode": "none", "dual_path": False},
           "fa_irl": {"failure_mode": "margin", "dual_path": True}}
COMMON = {"world": WORLD, "fit": {"rounds": 15}, "seeds": [0, 1, 2],
          "objectives": [{"metric": "val_f1"}], "sampler": {"type": "grid"}, "top_failures": 5}
# The paper's studies, shrunk (same names, so the report finds them): seconds, not minutes.
STUDIES = {
    "main_table": {**COMMON, "variants": METHODS,
                   "search": {"variant": ["standard_irl", "fa_irl"],
                              "objective": ["max_margin", "max_entropy"]}},
    "ablation_no_rf": {**COMMON, "ablation": "no_rf", "variants": {
        **METHODS, "failure_reweight_no_rf": {"failure_mode": "margin", "dual_path": False}},
        "search": {"objective": ["max_margin"]}},
    "ablation_fixed_lambda": {**COMMON, "ablation": "fixed_lambda",
                              "search": {"lambda0": [1.0, 10.0], "lambda_fixed": [True, False]}},
    "ablation_failure_source": {**COMMON, "ablation": "failure_source", "variants": {
        "ground_truth_failures": {"failure_mode": "ground_truth", "dual_path": True},
        "margin_failures": {"failure_mode": "margin", "dual_path": True},
        "standard_irl": METHODS["standard_irl"]}, "search": {"objective": ["max_entropy"]}},
    "tnt_fraction": {**COMMON, "variants": METHODS,
                     "world": {**WORLD, "options": {**WORLD["options"], "n_train": 600},
                               "compose": {"n": 100, "tnt_fraction": 0.5}},
                     "search": {"variant": ["standard_irl", "fa_irl"],
                                "world.compose.tnt_fraction": [0.2, 0.6]}},
    # issue 15's studies, shrunk onto the planted world (the SIR world's axes are searched the
    # same way: world.compose.n, world.compose.tnt_fraction)
    "identifiability": {**COMMON, "variants": METHODS,
                        "world": {**WORLD, "options": {**WORLD["options"], "n_train": 600},
                                  "compose": {"n": 100, "tnt_fraction": 0.5}},
                        "search": {"variant": ["standard_irl", "fa_irl"],
                                   "world.compose.n": [60, 200]}},
    "regime_map": {**COMMON, "variants": METHODS,
                   "world": {**WORLD, "options": {**WORLD["options"], "n_train": 600},
                             "compose": {"n": 100, "tnt_fraction": 0.5}},
                   "search": {"variant": ["standard_irl", "fa_irl"],
                              "world.compose.tnt_fraction": [0.2, 0.6],
                              "world.compose.n": [60, 120]}},
    # issue 25's studies, shrunk: the misspecification map's axes on the planted world (no m:
    # the map has one row), the budget study over fit.rounds
    "misspecification": {**COMMON, "variants": METHODS,
                         "world": {**WORLD, "options": {**WORLD["options"], "n_train": 600},
                                   "compose": {"n": 100, "tnt_fraction": 0.5}},
                         "search": {"variant": ["standard_irl", "fa_irl"],
                                    "world.compose.tnt_fraction": [0.2, 0.6],
                                    "world.compose.n": [60, 120]},
                         "verdict_metrics": ["test_starc"]},
    "budget": {**COMMON, "variants": METHODS, "fit": {"lambda_decay_scaled": True},
               "search": {"variant": ["standard_irl", "fa_irl"], "rounds": [5, 20]},
               "verdict_metrics": ["test_pairwise_accuracy", "test_starc"]},
    "fa_sweep": {**COMMON, "seeds": [0, 1], "sampler": {"type": "random", "seed": 0}, "trials": 6,
                 "search": {"objective": ["max_margin", "max_entropy"],
                            "M_fail": {"type": "float", "low": 1.0, "high": 5.0},
                            "tau_fail": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
                            "lambda0": {"type": "float", "low": 0.5, "high": 50.0, "log": True}}},
}
FIGURES = ("training_curves", "reward_distributions", "tnt_fraction", "ablation_fixed_lambda",
           "ablation_failure_source", "sweep_heatmap", "importances", "identifiability",
           "regime_map", "misspecification", "budget", "feasible_width")
TABLES = ("claims", "main_table", "ablation_no_rf", "ablation_fixed_lambda",
          "ablation_failure_source", "identifiability", "regime_map", "misspecification",
          "budget", "feasible_width")
CSV_ONLY = ("failures", "tnt_fraction", "sweep_heatmap", "importances")



@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every study (shrunk) plus the smoke study run into a temporary store; report built."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRL_MLRUNS", str(root / "default-mlruns"))  # never the repo's mlruns/
        for name in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE"):
            patch.delenv(name, raising=False)
        uri = fresh_store(root / "mlruns", tmp_path_factory.getbasetemp())
        storage = str(root / "mlruns" / "optuna.journal")
        studies = root / "studies"
        studies.mkdir()
        shutil.copy(ROOT / "studies" / "smoke.yaml", studies / "smoke.yaml")
        for name, study in STUDIES.items():
            (studies / f"{name}.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
        for path in sorted(studies.glob("*.yaml")):
            report = run_study(path, storage=storage, tracking_uri=uri, progress=False)
            assert report.status == write.FINISHED, (path.name, report.messages)
        out = root / "reports"
        code = main(["report", "--tracking-uri", uri, "--out", str(out),
                     "--studies", str(studies)])
        yield {"uri": uri, "out": out, "studies": studies, "code": code, "root": root}


def test_every_item_is_built_with_its_files(built):
    out = built["out"]
    assert built["code"] == 0
    for name in FIGURES:
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000, name
    for name in TABLES:
        for suffix in (".md", ".tex", ".csv"):
            assert (out / "tables" / f"{name}{suffix}").stat().st_size > 100, name
    for name in CSV_ONLY:
        assert (out / "tables" / f"{name}.csv").stat().st_size > 50, name
    report = (out / "REPORT.md").read_text()
    assert "Not built yet" not in report and "Failed" not in report
    for name in FIGURES:
        assert f"](figures/{name}.png)" in report
    assert report.count("*Figure ") == len(FIGURES)
    # Provenance: every main-table run id, its experiment, a git commit, the dataset hash.
    table = pd.read_csv(out / "tables" / "main_table.csv")
    for run_id in set(table["standard_run_id"]) | set(table["fa_irl_run_id"]):
        assert f"`{run_id}`" in report
    assert "MLflow experiment `main_table`" in report
    assert "Git commit(s) of the runs: `" in report
    assert "planted `planted-" in report
    failures = pd.read_csv(out / "tables" / "failures.csv")
    assert len(failures) == 5 and {"margin", "gt_T", "gt_NT"} <= set(failures.columns)


def test_main_table_equals_search_runs(built):
    import mlflow
    from scipy import stats

    mlflow.set_tracking_uri(built["uri"])
    runs = mlflow.search_runs(experiment_names=["main_table"],
                              filter_string="tags.kind = 'trial'").set_index("run_id")
    assert len(runs) == 4
    table = pd.read_csv(built["out"] / "tables" / "main_table.csv")
    assert set(table["objective"]) == {"max_margin", "max_entropy"}
    assert len(table) == 2 * 5
    markdown = (built["out"] / "tables" / "main_table.md").read_text()
    for row in table.to_dict("records"):
        metric = row["metric"]
        for prefix, method in (("standard", "standard_irl"), ("fa_irl", "fa_irl")):
            run = runs.loc[row[f"{prefix}_run_id"]]
            assert run["tags.method"] == method and run["params.fit.objective"] == row["objective"]
            assert row[f"{prefix}_mean"] == run[f"metrics.{metric}"]
            assert row[f"{prefix}_std"] == run[f"metrics.{metric}_std"]
            seeds = np.array([run[f"metrics.seed_{seed}/{metric}"] for seed in (0, 1, 2)])
            assert math.isclose(row[f"{prefix}_mean"], seeds.mean(), rel_tol=1e-12)
            assert math.isclose(row[f"{prefix}_std"], seeds.std(ddof=1), rel_tol=1e-9)
            half = stats.t.ppf(0.975, 2) * seeds.std(ddof=1) / math.sqrt(3)
            assert math.isclose(row[f"{prefix}_ci_high"], seeds.mean() + half, rel_tol=1e-9)
            assert f"{row[f'{prefix}_mean']:.3f} ± {row[f'{prefix}_std']:.3f}" in markdown
        fa = runs.loc[row["fa_irl_run_id"]]
        standard = runs.loc[row["standard_run_id"]]
        pairs = [(fa[f"metrics.seed_{s}/{metric}"], standard[f"metrics.seed_{s}/{metric}"])
                 for s in (0, 1, 2)]
        if not np.allclose([a - b for a, b in pairs], 0):
            p = stats.ttest_rel(*zip(*pairs)).pvalue
            assert math.isclose(row["p_paired_t"], p, rel_tol=1e-9)
        assert math.isclose(row["relative_change_percent"],
                            100 * (row["fa_irl_mean"] - row["standard_mean"])
                            / abs(row["standard_mean"]), rel_tol=1e-12)
        # every metric: the prompt × seed bootstrap interval of Δ with its verdict
        assert row["diff_ci_low"] <= row["diff_ci_high"]
        assert row["interval"] == "prompt×seed bootstrap" and row["n_boot"] == 5000
        assert row["verdict"] in ("better", "worse", "no detectable difference")
        assert 0 <= row["prob_improvement"] <= 1 and row["mde"] > 0
        assert row["p_holm"] >= row["p_bootstrap"]
    header = markdown.splitlines()[2]
    for column in ("standard IRL", "FA-IRL", "95 % CI of Δ", "P(FA better)", "verdict (Holm)",
                   "MDE"):
        assert column in header
    assert "validation split" in markdown.splitlines()[0]  # how the configurations were chosen
    assert "| reference | STARC | linear oracle" in markdown


def test_logged_test_rewards_reproduce_the_logged_auc(built):
    """rewards.npz (what the reward figure plots) agrees with the run's own seed metrics."""
    from sklearn.metrics import roc_auc_score

    from fairl.runs.read import load_study_runs

    source = load_study_runs(built["uri"], "main_table", "studies/main_table.yaml")
    for run in source.runs:
        with np.load(source.artifact(run, "rewards.npz")) as data:
            for seed in run.seeds:
                r_T, r_NT = data[f"seed{seed}/test_R_T"], data[f"seed{seed}/test_R_NT"]
                auc = roc_auc_score(np.r_[np.ones(len(r_T)), np.zeros(len(r_NT))], np.r_[r_T, r_NT])
                assert math.isclose(auc, run.metrics[f"seed_{seed}/test_roc_auc"], rel_tol=1e-6)


def test_regenerating_gives_identical_files(built):
    again = built["root"] / "again"
    assert main(["report", "--tracking-uri", built["uri"], "--out", str(again),
                 "--studies", str(built["studies"])]) == 0
    for folder in ("tables", "figures"):
        for path in sorted((built["out"] / folder).iterdir()):
            assert path.read_bytes() == (again / folder / path.name).read_bytes(), path.name
    report = (built["out"] / "REPORT.md").read_text()
    assert report == (again / "REPORT.md").read_text().replace(str(again), str(built["out"]))


def test_chosen_run_and_single_items(built, capsys):
    """--run inspects any run (here one of the smoke study); --only leaves REPORT.md alone."""
    import mlflow

    mlflow.set_tracking_uri(built["uri"])
    smoke = mlflow.search_runs(experiment_names=["smoke"],
                               filter_string="tags.kind = 'trial' and tags.method = 'fa_irl'")
    run_id = smoke["run_id"].iloc[0]
    out = built["root"] / "chosen"
    assert main(["report", "--tracking-uri", built["uri"], "--out", str(out), "--studies",
                 str(built["studies"]), "--only", "training_curves", "failures",
                 "--run", run_id]) == 0
    assert (out / "figures" / "training_curves.png").exists()
    assert run_id[:8] in (out / "tables" / "failures.md").read_text()
    assert not (out / "REPORT.md").exists()
    assert main(["report", "--only", "nonsense", "--tracking-uri", built["uri"]]) == 2
    assert "items: claims, main_table" in capsys.readouterr().err


def test_missing_studies_name_the_command(tmp_path, tmp_path_factory, capsys):
    uri = fresh_store(tmp_path / "empty", tmp_path_factory.getbasetemp())
    out = tmp_path / "reports"
    assert main(["report", "--tracking-uri", uri, "--out", str(out)]) == 0
    report = (out / "REPORT.md").read_text()
    for study in ("main_table", "tnt_fraction", "fa_sweep", "ablation_no_rf",
                  "ablation_fixed_lambda", "ablation_failure_source", "identifiability",
                  "regime_map"):
        assert f"run `fairl study run studies/{study}.yaml --tracking-uri {uri}`" in report
    # only the item that reads no study (feasible_width: its own LPs) has a figure
    assert {path.stem for path in out.glob("figures/*")} == {"feasible_width"}
    capsys.readouterr()
    # Asked for by name: the message on stderr and a non-zero exit.
    assert main(["report", "--tracking-uri", uri, "--out", str(out), "--only",
                 "tnt_fraction"]) == 1
    assert (f"run: fairl study run studies/tnt_fraction.yaml --tracking-uri {uri}"
            in capsys.readouterr().err)


def test_items_run_as_scripts(built):
    """`python analysis/<item>.py` builds that item with the same options."""
    out = built["root"] / "script"
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "ablation_no_rf.py"),
                           "--tracking-uri", built["uri"], "--out", str(out), "--studies",
                           str(built["studies"])], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "tables" / "ablation_no_rf.md").read_bytes() == \
        (built["out"] / "tables" / "ablation_no_rf.md").read_bytes()


def test_every_item_has_a_module():
    import importlib

    for name in ITEMS:
        module = importlib.import_module(f"analysis.{name}")
        assert module.NAME == name and callable(module.build)
        # STUDY None: an item that reads no study (feasible_width solves its own LPs)
        assert module.STUDY is None or (ROOT / "studies" / f"{module.STUDY}.yaml").is_file()


def test_markdown_cells_escape_world_text():
    from analysis.common import markdown_table

    table = markdown_table(["text"], [["a | b *c* <script>x</script>\nnext"]])
    assert table.splitlines()[2] == r"| a \| b \*c\* \<script>x\</script> next |"


def test_failure_inspection_shows_texts(tmp_path, tmp_path_factory):
    """A run whose world has texts (as the default world's will): texts land in the table."""
    from fairl.pairs import Pairs

    uri = fresh_store(tmp_path / "texts", tmp_path_factory.getbasetemp())
    pairs = Pairs(h_T=np.zeros((3, 2), np.float32), h_NT=np.zeros((3, 2), np.float32),
                  gt_T=np.array([0.9, 0.2, 0.8]), gt_NT=np.array([0.1, 0.6, 0.3]),
                  prompt_ids=np.arange(3), tnt=np.array([True, False, True]),
                  text_T=["You are *kind* | thanks", "fine", "ok"],
                  text_NT=["You are an idiot", "hm", "x" * 500],
                  prompts=["Tell me", "Say", "Write"])
    rows = write.top_failures(pairs, np.array([7, 9, 1]), np.array([0.2, -0.4, 0.1]), 3)
    experiment = runs_store.experiment_id(uri, "hand_made")
    run = write.start_run(uri, experiment, "trial-0000",
                             {"kind": "trial", "method": "fa_irl", "seed": "0",
                              "trial_number": "0", "world": "default", "dataset_hash": "abc"})
    write.log_run(uri, run, params={"fit.objective": "max_margin"})
    write.log_text(uri, run, write.failures_csv({0: rows}), "failures.csv")
    write.end_run(uri, run)
    out = tmp_path / "reports"
    assert main(["report", "--tracking-uri", uri, "--out", str(out), "--only", "failures",
                 "--run", run]) == 0
    table = (out / "tables" / "failures.md").read_text()
    assert r"You are \*kind\* \| thanks" in table and "You are an idiot" in table
    assert "x" * 159 + "…" in table and "x" * 161 not in table
    lines = [line for line in table.splitlines() if line.startswith("| 0 |")]
    assert lines[0] == r"| 0 | 1 | 9 | -0.400 | 0.200 | 0.600 | r\* prefers base | no | Say | fine | hm |"


def _independent_starc_interval(data_a, data_b, seeds, n_boot=5000, seed=0, level=0.95):
    """A plain loop over bootstrap replicates with fairl.metrics.starc on explicitly resampled
    test pairs (each drawn copy of a prompt its own group), the seed scheme of fairl.stats:
    default_rng(seed) draws the (B, P) prompt indices, then the (B, S) seed indices."""
    from fairl.metrics import starc

    prompts, codes = np.unique(data_a["test_prompt_ids"], return_inverse=True)
    rows = [np.flatnonzero(codes == p) for p in range(len(prompts))]
    rng = np.random.default_rng(seed)
    prompt_draws = rng.integers(0, len(prompts), (n_boot, len(prompts)))
    seed_draws = rng.integers(0, len(seeds), (n_boot, len(seeds)))
    gt_T, gt_NT = data_a["test_gt_T"].astype(float), data_a["test_gt_NT"].astype(float)
    differences = []
    for drawn_prompts, drawn_seeds in zip(prompt_draws, seed_draws):
        index = np.concatenate([rows[p] for p in drawn_prompts])
        copy = np.concatenate([np.full(len(rows[p]), j) for j, p in enumerate(drawn_prompts)])
        groups, truth = np.r_[copy, copy], np.r_[gt_T[index], gt_NT[index]]
        value = [np.mean([starc(np.r_[data[f"seed{seeds[s]}/test_R_T"][index],
                                      data[f"seed{seeds[s]}/test_R_NT"][index]].astype(float),
                                truth, groups) for s in drawn_seeds])
                 for data in (data_a, data_b)]
        differences.append(value[0] - value[1])
    return tuple(np.quantile(differences, [(1 - level) / 2, (1 + level) / 2]))


def test_main_table_starc_interval_equals_an_independent_prompt_bootstrap(built):
    """The table's 95 % interval of Δ STARC agrees with a plain-loop prompt × seed bootstrap
    of the same rewards.npz to 0.0005 at each end, and with the launch run's metrics."""
    from fairl.runs.read import load_study_runs

    source = load_study_runs(built["uri"], "main_table", "studies/main_table.yaml")
    table = pd.read_csv(built["out"] / "tables" / "main_table.csv")
    starc_rows = table[table["metric"] == "test_starc"]
    assert len(starc_rows) == 2
    runs = {run.run_id: run for run in source.runs}
    for row in starc_rows.to_dict("records"):
        fa, standard = runs[row["fa_irl_run_id"]], runs[row["standard_run_id"]]
        with np.load(source.artifact(fa, "rewards.npz")) as a, \
                np.load(source.artifact(standard, "rewards.npz")) as b:
            assert np.array_equal(a["test_prompt_ids"], b["test_prompt_ids"])
            assert len(np.unique(a["test_prompt_ids"])) < len(a["test_prompt_ids"])  # clusters
            low, high = _independent_starc_interval(dict(a), dict(b), fa.seeds)
        assert abs(row["diff_ci_low"] - low) < 5e-4 and abs(row["diff_ci_high"] - high) < 5e-4
        key = (f"verdict/fa_irl vs standard_irl/objective:{row['objective']}/test_starc")
        assert source.launch_metrics[f"{key}/ci_low"] == pytest.approx(row["diff_ci_low"])
        assert source.launch_metrics[f"{key}/p_holm"] == pytest.approx(row["p_holm"])
    oracle = source.launch_metrics["reference_oracle_test_starc"]
    assert table["reference_oracle_test_starc"].eq(oracle).all() and 0 < oracle < 1


def test_the_report_opens_with_the_claims_ledger(built):
    """≥ 9 claims, each with a verdict; measured ones name their runs; Holm per claim and world."""
    report = (built["out"] / "REPORT.md").read_text()
    first = next(line for line in report.splitlines() if line.startswith("## "))
    assert first == "## Claims ledger: does the paper reproduce?"
    ledger = pd.read_csv(built["out"] / "tables" / "claims.csv")
    assert ledger["claim"].nunique() >= 9
    words = ("reproduced", "not reproduced", "opposite", "mixed", "not measured", "not judged")
    assert all(any(str(v).startswith(w) for w in words) for v in ledger["verdict"])
    measured = ledger[ledger["best_run_ids"].notna()]
    # F1, ROC-AUC, accuracy and STARC of FA-IRL vs standard IRL on the planted world, the
    # T→NT gain, the failures' hard share, λ decay, the failure path, STARC against n
    assert set(measured["claim"]) >= {"f1", "roc_auc", "accuracy", "starc", "tnt_share",
                                      "failures", "lambda_decay", "failure_path", "constraints"}
    assert set(measured["world"]) == {"planted"}
    for run_ids in measured["all_run_ids"]:
        assert all(f"`{run_id}`" in report for run_id in run_ids.split())
    not_measured = ledger[ledger["verdict"] == "not measured"]
    assert list(not_measured["claim"]) == ["rerlhf"]  # no policy runs in this store
    command = not_measured["command"].iloc[0]  # the report's own studies folder's file
    assert command.startswith("fairl rerlhf run ") and command.endswith(
        f"studies/rerlhf/rerlhf.yaml --tracking-uri {built['uri']}"), command
    assert ledger.loc[ledger["claim"] == "theorem_1", "verdict"].iloc[0] == "reproduced"
    cells = pd.read_csv(built["out"] / "tables" / "claims_cells.csv")
    assert (cells["p_holm"] >= cells["p_value"] - 1e-12).all()
    starc = cells[cells["claim"] == "starc"]  # every FA-IRL − standard IRL STARC cell, one family
    # main, tnt, identifiability, regime map, budget; the shrunk misspecification study repeats
    # the regime map's configurations on the same world: the same evidence, counted once
    assert len(starc) == 2 + 2 + 2 + 4 + 2
    relative = starc["difference"] / starc["b"].abs()  # "up to": the best relative change
    best = ledger[ledger["claim"] == "starc"].iloc[0]
    assert best["best_difference"] == pytest.approx(starc.loc[relative.idxmin(), "difference"])


def test_runs_without_test_prompt_ids_name_the_rerun(tmp_path, monkeypatch):
    """Runs logged before rewards.npz held test_prompt_ids: the item says what to rerun."""
    import io

    from analysis.common import bootstrap_rows
    from fairl.runs.read import MissingStudy, StudyRuns, TrialRun

    arrays = {"seed0/test_R_T": np.ones(4), "seed0/test_R_NT": np.zeros(4),
              "test_gt_T": np.ones(4), "test_gt_NT": np.zeros(4)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (tmp_path / "rewards.npz").write_bytes(buffer.getvalue())

    def run(run_id, method):
        return TrialRun(run_id, run_id, 0, 0, {"fit.objective": "max_margin", "variant": method},
                        {}, {"method": method, "seed": "0"}, "", "1")

    source = StudyRuns("main_table", "studies/main_table.yaml", "sqlite:///x", "1", [],
                       [run("a", "standard_irl"), run("b", "fa_irl")],
                       {"variants": {"standard_irl": {}, "fa_irl": {}}})
    monkeypatch.setattr(StudyRuns, "artifact", lambda self, run, path: tmp_path / path)
    with pytest.raises(MissingStudy, match="test_prompt_ids") as missing:
        bootstrap_rows(source)
    assert missing.value.command.startswith("fairl study run studies/main_table.yaml")


def test_ablation_table_judges_starc_against_standard_irl_with_the_bootstrap(built):
    table = pd.read_csv(built["out"] / "tables" / "ablation_no_rf.csv")
    judged = table[table["run_id"] != table["reference_run_id"]]
    assert len(judged) == 2  # fa_irl and failure_reweight_no_rf vs standard IRL, max-margin
    assert set(judged["test_starc_verdict"]) <= {"better", "worse", "no detectable difference"}
    assert (judged["test_starc_diff_ci_low"] <= judged["test_starc_diff_ci_high"]).all()
    assert (judged["test_f1_diff_ci_low"] <= judged["test_f1_diff_ci_high"]).all()
    assert "Δ STARC vs standard IRL [95 % CI]" in (
        built["out"] / "tables" / "ablation_no_rf.md").read_text()
