"""Many machines: a study run by two workers (separate dirs, caches, local stores, as two hosts)
against a real `mlflow server` (PostgreSQL backend, served artifacts) and PostgreSQL for Optuna,
the database restarted mid-study (in a trial's Optuna tell); everything is then checked, and
the report rebuilt, through the server alone. Once for an IRL study, once for a re-RLHF one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from study_support import free_port, pg_ctl, postgres_or_skip, serve

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = Path(sys.executable).with_name("mlflow")
# The report's main table on a small planted world: 2 variants x 2 objectives = a grid of 4.
STUDY = {
    "world": {"name": "planted", "options": {"n_train": 300, "n_test": 200, "d": 8, "seed": 0,
                                             "max_pairs_per_prompt": 4}},
    "fit": {"rounds": 5},
    "variants": {"standard_irl": {"failure_mode": "none", "dual_path": False},
                 "fa_irl": {"failure_mode": "margin", "dual_path": True}},
    "search": {"variant": ["standard_irl", "fa_irl"], "objective": ["max_margin", "max_entropy"]},
    "sampler": {"type": "grid"},
    "seeds": [0, 1],
    "objectives": [{"metric": "val_f1"}],
}


@pytest.fixture(scope="module")
def postgres():
    with postgres_or_skip() as url:
        yield url


def second_database(url: str, name: str) -> str:
    """A new database in the same cluster (MLflow's tables apart from Optuna's)."""
    import psycopg2

    base, _, _ = url.rpartition("/")
    connection = psycopg2.connect(f"{base}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return f"{base}/{name}"


def start_server(backend: str, artifacts: Path, port: int, log: Path) -> subprocess.Popen:
    """`mlflow server` in its own session (its workers die with it), up when /health answers."""
    command = [str(MLFLOW), "server", "--backend-store-uri", backend, "--serve-artifacts",
               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    # 90 s: the schema migrations on PostgreSQL take a while
    return serve(command, f"http://127.0.0.1:{port}/health", log, 90, env)


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def start_worker(host: Path, study: Path, storage: str, uri: str, mark: Path | None = None
                 ) -> subprocess.Popen:
    """One 'host': its own working dir, cache and local store; only the servers are shared.
    With `mark`, trial 1 pauses in its Optuna tell until `mark`.go exists (tests/fault_hooks)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE")}
    env.update(FAIRL_CACHE=str(host / "cache"), FAIRL_MLRUNS=str(host / "mlruns"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "fault_hooks"), str(ROOT)]),
               MLFLOW_DISABLE_TELEMETRY="true", FAIRL_THREADS="1", FAIRL_STORE_TIMEOUT="120")
    if mark is not None:
        env.update(FAIRL_FAULT="pause_at:tell:1", FAIRL_FAULT_MARK=str(mark))
    host.mkdir(parents=True)
    return subprocess.Popen([sys.executable, "-m", "fairl", "study", "run", str(study),
                             "--storage", storage, "--tracking-uri", uri, "--no-progress"],
                            cwd=host, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.mark.slow
def test_two_hosts_through_a_real_mlflow_server(postgres, tmp_path, monkeypatch):
    import optuna
    from mlflow.tracking import MlflowClient

    from fairl.study.storage import open_storage

    studies = tmp_path / "studies"
    studies.mkdir()
    study = studies / "main_table.yaml"
    study.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # The driver by name: MLflow's SQLAlchemy would look for psycopg 3 (not installed).
    backend = second_database(postgres, "mlflow").replace("postgresql://", "postgresql+psycopg2://")
    started = time.monotonic()
    server = start_server(backend, tmp_path / "artifacts", port, tmp_path / "server.log")
    print(f"mlflow server up in {time.monotonic() - started:.0f} s")
    try:
        started = time.monotonic()
        mark = tmp_path / "mark"
        workers = [start_worker(tmp_path / f"host{i}", study, postgres, uri, mark)
                   for i in (1, 2)]
        held = Path(f"{mark}.tell.1")  # trial 1 is finished, its tell not yet made
        while not held.exists():
            assert all(worker.poll() is None for worker in workers)
            assert time.monotonic() - started < 200
            time.sleep(0.1)
        pg_ctl(postgres, "stop")  # every session cut, as a restart does; the tell meets it
        Path(f"{held}.go").touch()
        time.sleep(5)  # the other host's calls (Optuna's, the MLflow server's) meet it too
        pg_ctl(postgres, "start")
        outputs = [worker.communicate(timeout=240)[0] for worker in workers]
        for worker, output in zip(workers, outputs):
            assert worker.returncode == 0, output
        assert any(f"Optuna storage {postgres} unreachable since" in output
                   for output in outputs), outputs
        assert not any("View run" in output for output in outputs), outputs
        print(f"two workers done in {time.monotonic() - started:.0f} s, the database "
              "restarted in between:")
        print("\n".join(line for output in outputs for line in output.splitlines()
                        if line.startswith("fairl: ")))

        from fairl.models import load_reward

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("main_table")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        trials = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
        launches = [run for run in runs if run.data.tags.get("kind") == "launch"]
        assert len(launches) == 2 and len({run.data.tags["worker"] for run in launches}) == 2
        trials_optuna = optuna.load_study(study_name="main_table",
                                          storage=open_storage(postgres)).get_trials()
        complete = [trial for trial in trials_optuna if trial.state.name == "COMPLETE"]
        assert len(complete) == 4 == len(trials), [  # a failed trial's reason, if any
            (trial.number, trial.state.name, trial.user_attrs.get("fail_reason"))
            for trial in trials_optuna]
        assert {run.info.status for run in trials} == {"FINISHED"}
        downloads = tmp_path / "downloads"
        for run in trials:
            assert run.data.params["fit.rounds"] == "5" and "variant" in run.data.params
            assert len(client.get_metric_history(run.info.run_id, "curve/loss")) == 5
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served, not a path
            for name in ("rewards.npz", "config.yaml"):
                local = Path(client.download_artifacts(run.info.run_id, name,
                                                       str(downloads / run.info.run_id)))
                assert local.stat().st_size > 100
            # The reward model's files went up through the server (not a local folder).
            reward = load_reward(run.data.tags["reward_model_uri"], uri)
            assert reward.best_seed == int(run.data.tags["reward_best_seed"])
            assert sorted(reward.results) == [0, 1]
        assert any((tmp_path / "artifacts").rglob("rewards.npz"))  # stored by the server
        assert any((tmp_path / "artifacts").rglob("MLmodel"))

        # The report from the server alone: this process has no store of its own.
        monkeypatch.setenv("FAIRL_MLRUNS", str(tmp_path / "reporter-mlruns"))
        for name in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE"):
            monkeypatch.delenv(name, raising=False)
        from fairl.cli import main

        out = tmp_path / "report"
        assert main(["report", "--tracking-uri", uri, "--out", str(out), "--studies",
                     str(studies), "--only", "main_table"]) == 0
        import pandas as pd

        table = pd.read_csv(out / "tables" / "main_table.csv")
        assert set(table["objective"]) == {"max_margin", "max_entropy"}
        assert table["fa_irl_mean"].notna().all() and table["standard_mean"].notna().all()
        cited = set(re.findall(r"\b[0-9a-f]{32}\b", table.to_csv()))
        assert cited and cited <= {run.info.run_id for run in trials}  # the server's runs
    finally:
        stop(server)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_hosts_run_a_re_rlhf_study_through_a_real_mlflow_server(postgres, tmp_path,
                                                                      monkeypatch):
    """A re-RLHF study (tiny GPT-NeoX; base, r* and FA-IRL sources, 2 seeds) by two hosts on
    PostgreSQL: each cell one trial, its policy run on the server, the verdicts and the report
    from the server alone."""
    import optuna
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from paper_standins import build_standins
    from study_support import make_rerlhf_world, neox_study

    from fairl.study.storage import open_storage

    world = make_rerlhf_world(tmp_path / "world")
    neox = build_standins(tmp_path / "standins", pythia_only=True)["pythia"]
    study = neox_study(world, neox, seeds=(0, 1))
    study["sources"]["fa_irl"] = {"kind": "irl", "fit": {"rounds": 20}}
    path = tmp_path / "studies" / "rerlhf" / "rerlhf.yaml"  # where the report looks
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    backend = second_database(postgres, "mlflow_rerlhf").replace("postgresql://",
                                                                 "postgresql+psycopg2://")
    server = start_server(backend, tmp_path / "artifacts", port, tmp_path / "server.log")
    try:
        started = time.monotonic()
        workers = [start_worker(tmp_path / f"host{i}", path, postgres, uri) for i in (1, 2)]
        outputs = [worker.communicate(timeout=400)[0] for worker in workers]
        for worker, output in zip(workers, outputs):
            assert worker.returncode == 0, output
        print(f"two re-RLHF workers done in {time.monotonic() - started:.0f} s")

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("rerlhf_neox")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        launches = {run.info.run_id: run for run in runs if run.data.tags["kind"] == "launch"}
        policies = [run for run in runs if run.data.tags["kind"] == "policy"]
        assert len(launches) == 2 and len({run.data.tags["worker"] for run in
                                           launches.values()}) == 2
        trials = optuna.load_study(study_name="rerlhf_neox",
                                   storage=open_storage(postgres)).get_trials()
        assert sorted(trial.state.name for trial in trials) == ["COMPLETE"] * 6, [
            (trial.number, trial.state.name, trial.user_attrs.get("fail_reason"))
            for trial in trials]
        assert {(run.data.tags["source"], run.data.tags["seed"]) for run in policies} == {
            (source, seed) for source in ("none", "ground_truth", "fa_irl") for seed in "01"}
        assert {trial.user_attrs["mlflow_run_id"] for trial in trials} == {
            run.info.run_id for run in policies}
        for run in policies:  # each a child of one host's launch, its files on the server
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] in launches
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
            local = client.download_artifacts(run.info.run_id, "samples.csv",
                                              str(tmp_path / "downloads" / run.info.run_id))
            assert len(pd.read_csv(local)) == 6 * 2  # 6 eval prompts x 2 samples
        key = "verdict/fa_irl vs ground_truth/all/tox_rate_profanity/difference"
        assert any(key in run.data.metrics for run in launches.values())  # the last to finish

        monkeypatch.setenv("FAIRL_MLRUNS", str(tmp_path / "reporter-mlruns"))
        for name in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE"):
            monkeypatch.delenv(name, raising=False)
        from fairl.cli import main

        out = tmp_path / "report"
        assert main(["report", "--tracking-uri", uri, "--out", str(out), "--studies",
                     str(tmp_path / "studies"), "--only", "rerlhf"]) == 0
        table = pd.read_csv(out / "tables" / "rerlhf.csv")
        assert list(table["source"]) == ["none", "ground_truth", "fa_irl"]
        verdicts = pd.read_csv(out / "tables" / "rerlhf.verdicts.csv")
        assert list(verdicts["reference"]) == ["ground_truth"]
        assert set(verdicts["run_ids"].iloc[0].split(",")) <= {run.info.run_id
                                                                for run in policies}
    finally:
        stop(server)
