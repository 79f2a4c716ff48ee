"""Writing runs: the run layout, tags, params, metrics, curves and artifact formats.

Run layout. One experiment per study. Each `fairl study run` launch is a parent run
(tag kind=launch); each Optuna trial is one child run under it (kind=trial) holding the
whole configuration evaluated on every seed of the study:
* params: the resolved configuration (world.*, fit.* without the seed, seeds, variant);
* metrics: final train_/val_/test_ accuracy, f1, roc_auc, pairwise_accuracy, starc as the mean
  over seeds, `<metric>_std` over seeds, and each seed's value as `seed_<s>/<metric>`;
  per-round curves `curve/<name>` (loss terms, n_failures = |F_t|, n_sampled = |S_t|, gamma,
  lam, p, margins) with step = round, averaged over seeds;
* tags: study, ablation, method, variant, seed (the seeds, comma-separated), world,
  dataset_hash, config_id, trial_number, optuna_* links, worker, git_commit, git_dirty,
  fairl_version, torch_threads (the fit's results depend on the thread count: another count
  rounds MKL's products differently, and a sampled failure set can amplify one bit into
  another trajectory; `--workers K` gives each worker cores // K threads), run_key (a random
  id: a create retried after a server outage finds the run it made, `start_run`);
* artifacts: config.yaml (the resolved configuration), history.csv (every seed, every
  round), failures.csv (top-k pairs by rounds spent in F_t, with r* of both outputs and text
  when the world has them), rewards.npz (each seed's fitted heads and its rewards of every
  held-out output, with r*: what reports/ plots without loading the world; ~8 bytes per test
  pair and seed); a failed trial adds traceback.txt and the tag `error`, and ends FAILED;
* the reward as an MLflow pyfunc model `reward` (fairl.models; every seed's heads, the best
  seed by default; its URI in the tag reward_model_uri) and the world as dataset inputs
  `<world>/<train|validation|test>` with the content hash as digest;
* names: `<variant> · <searched values> #<trial number>`; the experiment's tags make
  MLflow's UI open on the runs table with the columns a comparison needs (fairl.runs.store).
Logging goes through `MlflowClient.log_batch` (one call per run; a per-point loop is ~30x
slower); on a SQL store (SQLite, PostgreSQL) a run's new metrics go in as two bulk INSERTs
into MLflow's own tables instead (`insert_new_metrics`: ~7x faster). mlflow is imported
lazily: it costs ~2 s.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from fairl.runs.provenance import environment_tags
from fairl.runs.store import client, experiment_id, resolve_tracking_uri

# Metrics every fit is judged on (fairl.metrics.evaluate_reward), in table order.
FINAL_METRICS = ("accuracy", "f1", "roc_auc", "pairwise_accuracy", "starc")
# The splits every trial is scored on, as metric prefixes (val: the world's validation split).
SPLITS = ("test", "val", "train")
# Per-round history keys logged as curves (fairl.irl.fit history records).
CURVES = ("loss", "loss_base", "loss_fail", "loss_l2", "n_failures", "n_sampled", "gamma", "lam",
          "p", "margin_mean", "margin_min", "train_pairwise_accuracy")

# MLflow run statuses (strings, so callers need not import mlflow).
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


def start_run(uri: str, experiment: str, name: str, tags: dict[str, str],
              parent_run_id: str | None = None) -> str:
    """Create a RUNNING run (nested under `parent_run_id` if given); returns its id.

    Its tag run_key (random) finds the run when a create retried after an outage had gone
    in (its answer lost): never two runs for one start."""
    key = uuid.uuid4().hex
    tags = {**tags, "mlflow.runName": name, "mlflow.source.name": "fairl",
            "mlflow.source.type": "LOCAL", "mlflow.user": os.environ.get("USER", "fairl"),
            "run_key": key}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    mlflow_client = client(uri)

    def made() -> Any:
        found = mlflow_client.raw.search_runs([experiment], f"tags.run_key = '{key}'",
                                              max_results=1)
        return found[0] if found else None

    run = mlflow_client.wait_out(
        lambda: mlflow_client.raw.create_run(experiment, run_name=name, tags=tags), made)
    _ARTIFACT_URIS[run.info.run_id] = run.info.artifact_uri
    return run.info.run_id


def start_logged_model(uri: str, experiment: str, run_id: str, name: str,
                       params: dict[str, str]) -> Any:
    """A PENDING LoggedModel `name` made in `experiment` from run `run_id` and linked as its
    output (MLflow's runs table lists it in the Models column); a create or link retried
    after an outage that had gone in is found, never made twice."""
    from mlflow.entities import LoggedModelOutput  # heavy: see fairl.runs.store.client

    mlflow_client = client(uri)
    raw = mlflow_client.raw

    def made() -> Any:
        found = raw.search_logged_models(
            [experiment], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
            max_results=1)
        return found[0] if found else None

    model = mlflow_client.wait_out(
        lambda: raw.create_logged_model(experiment, name=name, source_run_id=run_id,
                                        params=params), made)

    def linked() -> bool | None:
        outputs = getattr(raw.get_run(run_id).outputs, "model_outputs", None) or []
        return True if any(output.model_id == model.model_id for output in outputs) else None

    mlflow_client.wait_out(
        lambda: raw.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)]), linked)
    return model


_ARTIFACT_URIS: dict[str, str] = {}  # run id -> artifact URI, for runs started here


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dict -> {"a.b": "value"} strings, as MLflow params."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def mean_curves(histories: list[list[dict]], points: int | None = None
                ) -> dict[str, dict[int, float]]:
    """Per-round curves averaged over seeds: {name: {round: value}}.

    `points` caps the rounds kept per curve (evenly spaced, first and last included): MLflow
    stores each point as one row (~0.06 ms each here); history.csv keeps every round.
    """
    rounds = min(len(history) for history in histories)
    steps = range(rounds)
    if points is not None and rounds > points:
        steps = sorted({round(i * (rounds - 1) / (points - 1)) for i in range(points)}) \
            if points > 1 else [rounds - 1]
    return {name: {t: sum(float(history[t][name]) for history in histories) / len(histories)
                   for t in steps}
            for name in CURVES if all(name in history[0] for history in histories)}


def log_run(uri: str, run_id: str, *, params: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None,
            curves: dict[str, dict[int, float]] | None = None,
            tags: dict[str, str] | None = None) -> None:
    """Params, final metrics, curves (`curve/<name>` with step = round) and tags in one batch."""
    from mlflow.entities import Metric, Param, RunTag  # heavy: see fairl.runs.store.client

    now = int(time.time() * 1000)
    batch_metrics = [Metric(key, float(value), now, 0) for key, value in (metrics or {}).items()]
    for name, values in (curves or {}).items():
        batch_metrics += [Metric(f"curve/{name}", float(value), now, step)
                          for step, value in values.items()]
    mlflow_client = client(uri)
    batch = {"params": [Param(key, str(value)[:6000]) for key, value in (params or {}).items()],
             "tags": [RunTag(key, str(value)[:8000]) for key, value in (tags or {}).items()]}
    store = _sql_store(mlflow_client)
    if store is None or not batch_metrics:
        mlflow_client.log_batch(run_id, metrics=batch_metrics, **batch)
        return
    if batch["params"] or batch["tags"]:
        mlflow_client.log_batch(run_id, **batch)
    if not insert_new_metrics(mlflow_client, store, run_id, batch_metrics):
        mlflow_client.log_batch(run_id, metrics=batch_metrics)  # keys it has: MLflow merges


def _sql_store(mlflow_client) -> Any:
    """The client's MLflow SqlAlchemyStore (a SQLite or PostgreSQL URI), or None (a server)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # heavy: see client

    store = getattr(getattr(mlflow_client.raw, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def insert_new_metrics(mlflow_client, store, run_id: str, metrics: list) -> bool:
    """A run's metrics written into MLflow's own tables (its SqlMetric and SqlLatestMetric
    models, through the store's session) with one INSERT each; False, writing nothing, when
    the run already has one of their keys (MLflow's log_batch then merges them).

    MLflow's SQL log_batch builds one ORM object per point and per latest value: ~80 ms for a
    trial's ~320 points here, against ~11 ms for these two bulk INSERTs. For new keys the rows
    are the same: each point as MLflow stores it (NaN as 0 with is_nan, ±inf clipped, its
    validation first) and each key's latest = its largest (step, timestamp, value), as
    MLflow's _update_latest_metrics_if_necessary picks (tests/runs/test_runs.py compares the
    two stores)."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from mlflow.utils.validation import _validate_metric
    from sqlalchemy import func, insert, select

    rows, latest = {}, {}
    for metric in metrics:
        _validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
        is_nan, value = store.sanitize_metric_value(metric.value)
        row = {"run_uuid": run_id, "key": metric.key, "value": value,
               "timestamp": metric.timestamp, "step": metric.step, "is_nan": is_nan}
        rows[(metric.key, metric.timestamp, metric.step, value, is_nan)] = row  # MLflow dedups
        old = latest.get(metric.key)
        if old is None or (row["step"], row["timestamp"], value) > \
                (old["step"], old["timestamp"], old["value"]):
            latest[metric.key] = row
    keys = sorted(latest)

    def present(session) -> int:
        return session.execute(select(func.count()).select_from(SqlLatestMetric).where(
            SqlLatestMetric.run_uuid == run_id, SqlLatestMetric.key.in_(keys))).scalar_one()

    def write() -> bool:
        with store.ManagedSessionMaker(read_only=False) as session:
            store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
            if present(session):
                return False
            session.execute(insert(SqlMetric.__table__), list(rows.values()))
            session.execute(insert(SqlLatestMetric.__table__), [latest[key] for key in keys])
        return True

    def went_in() -> bool | None:  # a retried write whose first try committed
        with store.ManagedSessionMaker() as session:
            return True if present(session) == len(keys) else None

    return mlflow_client.wait_out(write, went_in)


def log_text(uri: str, run_id: str, text: str | bytes, path: str) -> None:
    """A text (or, given bytes, binary) artifact at `path` inside the run's artifact directory.

    A local artifact directory (the default store) is written directly: MlflowClient.log_text
    would write a temporary file and copy it (~8 ms per file here).
    """
    artifact_uri = _ARTIFACT_URIS.get(run_id) or client(uri).get_run(run_id).info.artifact_uri
    if (folder := local_dir(artifact_uri)) is not None:
        write_files({path: text if isinstance(text, bytes) else text.encode("utf-8")}, folder)
    elif isinstance(text, bytes):
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder, Path(path).name)
            local.write_bytes(text)
            directory = str(Path(path).parent)
            client(uri).log_artifact(run_id, str(local), None if directory == "." else directory)
    else:
        client(uri).log_text(run_id, text, path)


def write_files(files: dict[str, bytes], folder: Path) -> None:
    """Each (path in `folder` -> bytes) of `files` written, folders made as needed."""
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def local_dir(artifact_uri: str) -> Path | None:
    """The local folder of an artifact URI (a plain path or file:///...); None if remote."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file") and not parsed.netloc:
        return Path(unquote(parsed.path))
    return None


def log_world_inputs(uri: str, run_id: str, world: str, dataset_hash: str,
                     splits: dict[str, int], source: dict[str, Any]) -> None:
    """The world as MLflow dataset inputs: one per split, digest = the world's content hash.

    `splits` maps an MLflow context (train, validation, test) to its pair count. One dataset
    per split (named `<world>/<context>`): a run holds a dataset once, whatever its context.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag  # heavy: see store.client

    schema = json.dumps({"mlflow_colspec": [
        {"type": "string", "name": name, "optional": True}
        for name in ("prompt", "text_T", "text_NT")] + [
        {"type": "double", "name": name, "optional": True} for name in ("gt_T", "gt_NT")]})
    inputs = [DatasetInput(
        Dataset(f"{world}/{context}", dataset_hash[:36], "fairl_world",
                json.dumps(source, sort_keys=True, default=str), schema,
                json.dumps({"num_rows": count})),
        [InputTag("mlflow.data.context", context)])
        for context, count in splits.items()]
    _retry_unique_race(lambda: client(uri).log_inputs(run_id, datasets=inputs))


def _retry_unique_race(call, attempts: int = 3):
    """`call()`, again when it lost a create race on a unique key. MLflow's SQL store looks a
    dataset up, then inserts it: two hosts logging one world at once both miss it, and the
    later insert fails with a unique violation (seen in tests/runs/test_server.py, 1 trial in
    ~3 runs). Trying again finds the other host's row; any other error is raised at once."""
    from mlflow.exceptions import MlflowException  # heavy: see fairl.runs.store.client

    for attempt in range(attempts):
        try:
            return call()
        except MlflowException as error:
            text = str(error).lower()
            if attempt == attempts - 1 or not ("unique" in text and ("violat" in text
                                                                      or "constraint" in text)):
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


def end_run(uri: str, run_id: str, status: str = FINISHED) -> None:
    client(uri).set_terminated(run_id, status)


def error_line(error: BaseException) -> str:
    """One readable line: `Type: first line of the message`."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def fail_run(uri: str, run_id: str, error: BaseException) -> None:
    """traceback.txt artifact, tag `error` (one readable line), status FAILED."""
    text = "".join(traceback.format_exception(error))
    reason = error_line(error)
    try:
        log_text(uri, run_id, text, "traceback.txt")
    finally:
        client(uri).set_tag(run_id, "error", reason[:8000])
        end_run(uri, run_id, FAILED)


def kill_run(uri: str, run_id: str, reason: str) -> None:
    """Mark an orphaned run KILLED, saying why in its `error` tag."""
    client(uri).set_tag(run_id, "error", reason[:8000])
    end_run(uri, run_id, KILLED)


def record_run(uri: str | None, experiment: str, name: str, *, params: dict[str, Any],
               metrics: dict[str, float], curves: dict[str, list[float]],
               tags: dict[str, str], texts: dict[str, str | bytes] | None = None) -> str:
    """Log a finished piece of work (a world build, a policy run) as one FINISHED run.

    `curves` are per-step lists logged as `curve/<name>` with step = 1, 2, ...; returns the
    run id. Used where the work itself is cached, so the run can be recorded after it.
    """
    uri = resolve_tracking_uri(uri)
    run_id = start_run(uri, experiment_id(uri, experiment), name,
                       {**environment_tags(), **tags})
    log_run(uri, run_id, params=flatten(params), metrics=metrics,
            curves={key: {step + 1: value for step, value in enumerate(values)
                          if not math.isnan(value)}  # NaN steps (no sample) are skipped
                    for key, values in curves.items()})
    for path, text in (texts or {}).items():
        log_text(uri, run_id, text, path)
    end_run(uri, run_id)
    return run_id


# --- artifacts -----------------------------------------------------------------------------

def history_csv(histories: dict[int, list[dict]]) -> str:
    """Every round of every seed's fit as CSV (seed first)."""
    rows = [{"seed": seed, **record} for seed, history in histories.items() for record in history]
    return csv_text(rows)


def top_failures(train, failure_counts, margins, k: int) -> list[dict]:
    """The k training pairs that spent most rounds in F_t, with margins and text if any."""
    # Most rounds in F_t first; ties: the most wrongly ordered pair (lowest margin) first.
    order = np.lexsort((np.asarray(margins), -np.asarray(failure_counts)))[:k]
    rows = []
    for rank, index in enumerate(order):
        row = {"rank": rank, "pair": int(index), "failure_rounds": int(failure_counts[index]),
               "margin": float(margins[index])}
        if train.gt_T is not None and train.gt_NT is not None:
            row["gt_margin"] = float(train.gt_T[index] - train.gt_NT[index])
            row["gt_T"] = float(train.gt_T[index])
            row["gt_NT"] = float(train.gt_NT[index])
        if train.prompt_ids is not None:
            row["prompt_id"] = train.prompt_ids[index].item() \
                if hasattr(train.prompt_ids[index], "item") else train.prompt_ids[index]
        if train.tnt is not None:
            row["tnt"] = bool(train.tnt[index])
        for field in ("prompts", "text_T", "text_NT"):
            texts = getattr(train, field)
            if texts is not None:
                row[field.removesuffix("s")] = texts[index]
        rows.append(row)
    return rows


def rewards_npz(results: dict, test) -> bytes:
    """rewards.npz: per seed the fitted heads and R of every held-out output; r* once.

    Keys: seed<s>/ + FitResult.heads() (theta_D, theta_F — empty without a failure head —,
    biases = (b_D, b_F)), seed<s>/test_R_T, seed<s>/test_R_NT; test_gt_T, test_gt_NT when the
    world has r*; test_prompt_ids when the pairs know their prompts (bootstrap clusters).
    `results` maps seed -> fairl.irl.FitResult; `test` is the world's test Pairs.
    """
    arrays = {}
    for seed, result in results.items():
        arrays.update({f"seed{seed}/{key}": value for key, value in result.heads().items()})
        arrays[f"seed{seed}/test_R_T"] = result.reward(test.h_T).astype(np.float32)
        arrays[f"seed{seed}/test_R_NT"] = result.reward(test.h_NT).astype(np.float32)
    if test.gt_T is not None and test.gt_NT is not None:
        arrays["test_gt_T"] = np.asarray(test.gt_T, np.float32)
        arrays["test_gt_NT"] = np.asarray(test.gt_NT, np.float32)
    if test.prompt_ids is not None:
        arrays["test_prompt_ids"] = np.asarray(test.prompt_ids)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def failures_csv(rows_by_seed: dict[int, list[dict]]) -> str:
    """Every seed's top failure rows as one CSV (seed first)."""
    return csv_text([{"seed": seed, **row} for seed, rows in rows_by_seed.items() for row in rows])


def csv_text(rows: list[dict]) -> str:
    """Rows of dicts as CSV text (columns in first-seen order); empty for no rows."""
    if not rows:
        return ""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
