"""Re-RLHF cells: one (source, seed) of a re-RLHF study trained (or reused) and evaluated.

`objective` is a re-RLHF study's trial (fairl.study.kinds.RerlhfStudy; fairl.study.runner
drives it, as it drives IRL trials): the cell the grid sampler gives → a FINISHED policy run
with the cell's `config_hash` in the experiment (one made by an earlier launch, another
storage, or the grid loop re-RLHF had before it was a study) completes the trial from that
run's metrics, not retrained, and says so → else `run_cell`: the reward
(fairl.study.rerlhf_eval), its RLHF run (fairl.lm.rlhf caches policies by identity under
.cache/rerlhf/, so a killed cell resumes from its checkpoint) and the evaluation, all logged to
one run (tag kind=policy) that is a child of the launch run. As for an IRL trial
(fairl.study.trial): a stop signal re-queues the trial, its run KILLED; a disk error stops the
launch; any other error fails the trial, its run FAILED with traceback.txt, and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import yaml

from fairl import lm, outage
from fairl.config import ConfigError
from fairl.data.scorers import get_scorer
from fairl.lm.rlhf import load_policy, run_identity, train_policy
from fairl.paths import cache_dir, redact
from fairl.process import interrupts
from fairl.runs import write as runs
from fairl.runs.provenance import worker_identity
from fairl.runs.read import policy_runs
from fairl.runs.store import client, resolve_tracking_uri
from fairl.study.rerlhf_eval import evaluate_policy, load_study_world, make_reward, toxicity_metrics
from fairl.study.rerlhf_spec import Study, load_study, world_prompts
from fairl.study.trial import (
    WorkerContext,
    _fail_trial,
    _interrupted,
    raised_by_a_stop,
    store_fault,
)
from fairl.study.worlds import SuiteWorld, rerlhf_on_world


def policy_dir(identity: str) -> Path:
    return cache_dir() / "rerlhf" / identity


def objective(trial, study: Study, context: WorkerContext, lock) -> float:
    """One cell of the grid, reused or run; returns its Optuna value (the study's metric)."""
    outage.set_task(f"trial {trial.number} of {study.name}")  # what a store outage holds up
    # Recorded before the lock is released: a RUNNING trial without it has a dead worker.
    trial.set_user_attr("worker", worker_identity())
    lock.release()
    uri, run_id = context.tracking_uri, None
    try:
        with interrupts(True):  # a stop signal raises in the cell's own code (fairl.process)
            source = trial.suggest_categorical("source", study.source_names)
            seed = trial.suggest_categorical("seed", list(study.spec.seeds))
            config_hash = study.config_hash(source, seed)
            trial.set_user_attr("config_hash", config_hash)
            done = finished_run(uri, context.experiment, config_hash)
            if done is not None:
                trial.set_user_attr("mlflow_run_id", done.run_id)
                trial.set_user_attr("reused_run", True)
                print(f"{study.name}: trial {trial.number}: {source} seed {seed}: run "
                      f"{done.run_id} already FINISHED this cell (config_hash {config_hash}); "
                      "its metrics, not retrained", flush=True)
                return cell_value(study, done.metrics)
            run_id = start_cell(study, source, seed, context, trial)
            trial.set_user_attr("mlflow_run_id", run_id)
            print(f"{study.name}: trial {trial.number}: {source} seed {seed} (run {run_id})",
                  flush=True)
            metrics = run_cell(study, source, seed, uri, run_id, say=_say)
            runs.end_run(uri, run_id)
            return cell_value(study, metrics)
    except Exception as error:
        if raised_by_a_stop(error):  # a library's cleanup failed on the stop: still the stop
            _interrupted(trial, uri, run_id)
            raise KeyboardInterrupt from error
        if (fault := store_fault(error)) is not None:  # a full disk, a store away too long:
            raise fault from error  # the launch stops; the trial is re-queued, not failed
        _fail_trial(trial, study.name, uri, run_id, None, error)
        raise
    except BaseException:  # Ctrl-C / SIGTERM: re-queued, its RLHF resumes from the checkpoint
        _interrupted(trial, uri, run_id)
        raise


def _say(text: str) -> None:
    print(text, flush=True)  # a worker process's lines reach the terminal as they come


def finished_run(uri: str, experiment: str, config_hash: str):
    """The latest FINISHED policy run of the experiment with this config hash, or None."""
    found = [run for run in policy_runs(uri, experiment)
             if run.tags.get("config_hash") == config_hash]
    return found[-1] if found else None


def cell_value(study: Study, metrics: dict[str, float]) -> float:
    """The cell's Optuna value: its toxic rate by the study's first judge."""
    return float(metrics[study.spec.metrics[0]])


def start_cell(study: Study, source_name: str, seed: int, context: WorkerContext, trial) -> str:
    """The cell's MLflow run, a child of the launch run, tagged with the cell and the trial."""
    source = study.spec.sources[source_name]
    tags = {**context.env_tags, **study.spec.tags, "kind": "policy",
            "study": study.name, "source": source_name, "source_kind": source.kind,
            "seed": str(seed), "world": study.spec.world["name"],
            "dataset_hash": study.dataset_hash, "config_hash": study.config_hash(source_name, seed),
            "study_fingerprint": study.settings_fingerprint(), "worker": worker_identity(),
            "r_star_scorer": study.reward_scorer, "trial_number": str(trial.number),
            "optuna_trial_id": str(trial._trial_id), "optuna_study": study.name,
            "optuna_storage": redact(context.storage),
            "torch_threads": str(lm.configure_threads())}  # as the cell's LMs will run
    return runs.start_run(context.tracking_uri, context.experiment, f"{source_name}-seed{seed}",
                          tags, parent_run_id=context.launch_run)


def run_cell(study: Study, source_name: str, seed: int, uri: str, run_id: str, world=None,
             progress: bool = False, say=print) -> dict[str, float]:
    """The reward, its RLHF run (none for the base), the evaluation, all logged to `run_id`;
    returns the evaluation's metrics."""
    spec = study.spec
    source = spec.sources[source_name]
    train_prompts = world_prompts(study.world_path, spec.train_prompts)
    eval_prompts = world_prompts(study.world_path, spec.eval.prompts)
    if not eval_prompts:
        raise ConfigError(f"{study.path}: eval.prompts selects no prompt of the world")
    if world is None and source.kind == "irl":
        world = load_study_world(study)
    reward = make_reward(study, source_name, seed, uri, world)
    params = {"source": source_name, "source_kind": source.kind, "seed": seed,
              "base_model": spec.base_model, "world": spec.world,
              "train_prompts": dataclasses.asdict(spec.train_prompts),
              "n_train_prompts": len(train_prompts), "n_eval_prompts": len(eval_prompts),
              "eval": dataclasses.asdict(spec.eval), "judges": spec.judges,
              "threshold": spec.threshold}
    if reward.fn is not None:
        params["rlhf"] = dataclasses.asdict(study.rlhf_config(seed))
    runs.log_run(uri, run_id, params=runs.flatten({**params, **reward.params}),
                 metrics=reward.metrics, tags=reward.tags)
    for path, content in reward.artifacts.items():
        runs.log_text(uri, run_id, content, path)
    runs.log_text(uri, run_id, _yaml({"study": study.name, "config_hash":
                                      study.config_hash(source_name, seed), **params,
                                      "source_spec": dataclasses.asdict(source)}),
                  "config.yaml")
    policy, curves, metrics = None, {}, {}
    if reward.fn is not None:
        policy, curves, metrics = _train(study, seed, reward, train_prompts, uri, run_id,
                                         progress, say)
    return _evaluate(study, seed, policy, reward, eval_prompts, curves, metrics, uri, run_id,
                     progress, say)


def _train(study: Study, seed: int, reward, train_prompts: list[str], uri: str, run_id: str,
           progress: bool, say):
    """RLHF of the base LM against `reward` (cached by identity); step curves go to the run."""
    spec = study.spec
    if not train_prompts:
        raise ConfigError(f"{study.path}: train_prompts selects no prompt of the world")
    config = study.rlhf_config(seed)
    identity = run_identity(spec.base_model, config, reward.reward_id, train_prompts)
    out_dir = policy_dir(identity)
    logged: set[int] = set()

    def log_step(step: int, values: dict) -> None:
        runs.log_run(uri, run_id, curves={key: {step: value} for key, value in
                                          values.items() if _finite(value)})
        logged.add(step)

    def step_metrics(texts: list[str]) -> dict[str, float]:
        values = toxicity_metrics(texts, spec.judges, spec.threshold, study.device)
        values["r_star_mean"] = float(get_scorer(study.reward_scorer, study.device)
                                      .reward(texts).mean())
        return values

    say(f"  RLHF: {config.steps} steps x {config.prompts_per_step} prompts x "
        f"{config.samples_per_prompt} samples on {len(train_prompts)} train prompts "
        f"({out_dir})")
    started = time.perf_counter()
    result = train_policy(spec.base_model, reward.fn, train_prompts, config,
                          out_dir=out_dir, reward_id=reward.reward_id, log_fn=log_step,
                          metrics_fn=step_metrics, progress=progress)
    curves = result.curves
    earlier = {key: {step + 1: value for step, value in enumerate(values)
                     if step + 1 not in logged and _finite(value)}
               for key, values in curves.items()}  # resumed or cached: steps not yet logged
    runs.log_run(uri, run_id, curves={k: v for k, v in earlier.items() if v},
                 tags={"policy_identity": identity, "policy_dir": str(out_dir),
                       "policy_from_cache": str(result.from_cache).lower()})
    metrics = {"train_seconds": result.seconds,
               "seconds_per_step": result.seconds / max(len(curves.get("loss", [])), 1),
               "session_seconds": time.perf_counter() - started}
    policy, _ = load_policy(out_dir, device=study.device, dtype=study.dtype)
    return policy, curves, metrics


def _evaluate(study: Study, seed: int, policy, reward, eval_prompts: list[str], curves, metrics,
              uri: str, run_id: str, progress: bool, say) -> dict[str, float]:
    """Held-out evaluation of the policy (the base when None); metrics, samples, curves."""
    spec = study.spec
    say(f"  evaluating on {len(eval_prompts)} {spec.eval.prompts.split} prompts x "
        f"{spec.eval.samples} samples")
    started = time.perf_counter()
    base, tokenizer = lm.load_lm(spec.base_model, device=study.device, dtype=study.dtype)
    with torch.inference_mode():
        values, rows = evaluate_policy(policy, base, tokenizer, eval_prompts, spec.eval, seed,
                                       spec.judges, spec.threshold, reward.fn, progress=progress,
                                       device=study.device, r_star_scorer=study.reward_scorer)
    metrics = {**metrics, **values, "eval_seconds": time.perf_counter() - started}
    runs.log_run(uri, run_id, metrics=metrics)
    runs.log_text(uri, run_id, runs.csv_text(rows), "samples.csv")
    if curves:
        steps = max(len(values) for values in curves.values())
        table = [{"step": step + 1, **{key: values[step] for key, values in curves.items()
                                       if step < len(values)}} for step in range(steps)]
        runs.log_text(uri, run_id, runs.csv_text(table), "curves.csv")
    shown = ", ".join(f"{key} {metrics[key]:.3f}" for key in
                      (*(f"tox_rate_{judge}" for judge in spec.judges), "kl_to_base", "ppl_base")
                      if key in metrics)
    say(f"  done: {shown}")
    return metrics


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _yaml(values: dict) -> str:
    return yaml.safe_dump(json.loads(json.dumps(values, default=str)), sort_keys=False)


# --- status ----------------------------------------------------------------------------

def status_table(path: str | Path, tracking_uri: str | None = None,
                 world: SuiteWorld | None = None) -> str:
    """One line per cell: status of its latest run and its key metrics."""
    study = load_study(path, rerlhf_on_world(path, world))
    uri = resolve_tracking_uri(tracking_uri)
    found = client(uri).get_experiment_by_name(study.name)
    every = [] if found is None else policy_runs(uri, found.experiment_id, status=None)
    latest = {run.tags.get("config_hash"): run for run in every}
    keys = (*dict.fromkeys(f"tox_rate_{judge}" for judge in (study.spec.judges[0],
                                                             study.reward_scorer)),
            "kl_to_base", "ppl_base")
    lines = [(f"study {study.name} ({study.path}); world {study.spec.world['name']} "
              f"{study.dataset_hash[:19]}; store {uri}"),
             f"{'source':<14}{'seed':>5}  {'status':<9} {'run':<32}  "
             + "  ".join(f"{key:>18}" for key in keys)]
    for source, seed in study.cells():
        run = latest.get(study.config_hash(source, seed))
        status = run.status if run else "-"
        values = "  ".join(f"{run.metrics[key]:>18.4f}" if run and key in run.metrics
                           else f"{'-':>18}" for key in keys)
        lines.append(f"{source:<14}{seed:>5}  {status:<9} {run.run_id if run else '':<32}  "
                     f"{values}")
    return "\n".join(lines)
