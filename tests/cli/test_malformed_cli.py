"""Malformed study files and --set values through the real CLI: fast, short, nothing created.

Every file of tests/data/malformed_studies/ (listed in its cases.yaml with the field its error
must name) goes through `python -m fairl study run FILE`, and every --set item through
`python -m fairl fit --config fit_config.yaml --set ITEM`, each in a fresh FAIRL_MLRUNS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "malformed_studies"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
SECONDS = 2.0  # CLI start-up with optuna is ~0.8 s here; torch and mlflow are never imported
MAX_OUTPUT = 2048


def run_cli(args: list[str], store: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "FAIRL_MLRUNS": str(store), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for name in ("FAIRL_STORAGE", "FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fairl", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    return done, time.perf_counter() - start


def check(done: subprocess.CompletedProcess, seconds: float, store: Path, names: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert names in output, output
    assert len(output.encode()) < MAX_OUTPUT, len(output)
    assert seconds < SECONDS, seconds
    assert not store.exists() or not {"optuna.journal", "mlflow.db"} & {
        path.name for path in store.iterdir()}, list(store.iterdir())


def test_corpus_is_big_and_every_file_is_listed():
    listed = {case["file"] for case in CASES["cases"]} | {"fit_config.yaml"}
    assert listed == {path.name for path in CORPUS.glob("*.yaml")} - {"cases.yaml"}
    assert len(CASES["cases"]) >= 20 and len(CASES["set_cases"]) >= 10


@pytest.mark.parametrize("case", CASES["cases"], ids=[case["file"] for case in CASES["cases"]])
def test_malformed_study_file_through_the_cli(case, tmp_path):
    path = CORPUS / case["file"]
    done, seconds = run_cli(["study", "run", str(path), "--no-progress"], tmp_path / "mlruns")
    check(done, seconds, tmp_path / "mlruns", str(path))
    assert case["names"] in done.stderr, done.stderr


@pytest.mark.parametrize("case", CASES["set_cases"],
                         ids=[case["set"] for case in CASES["set_cases"]])
def test_malformed_set_value_through_the_cli(case, tmp_path):
    done, seconds = run_cli(["fit", "--config", str(CORPUS / "fit_config.yaml"), "--set",
                             case["set"]], tmp_path / "mlruns")
    check(done, seconds, tmp_path / "mlruns", case["names"])


@pytest.mark.parametrize(("flag", "env", "names"), [
    (["--store-timeout", "0"], {}, "--store-timeout: seconds"),
    ([], {"FAIRL_STORE_TIMEOUT": "soon"}, "FAIRL_STORE_TIMEOUT: seconds")])
def test_a_bad_store_timeout_is_told_before_any_work(flag, env, names, tmp_path, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done, seconds = run_cli(["study", "run", str(ROOT / "studies" / "main_table.yaml"),
                             "--no-progress", *flag], tmp_path / "mlruns")
    check(done, seconds, tmp_path / "mlruns", names)
    assert done.returncode == 2
