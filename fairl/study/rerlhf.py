"""Re-RLHF grid: each (source, seed) cell trained (or reused) and evaluated as one MLflow run.

A failed cell ends FAILED with traceback.txt and the grid goes on; a rerun skips cells with
a FINISHED run of the same `config_hash`, and a killed RLHF run resumes from its checkpoint
(`fairl.lm.rlhf` caches policies by identity under .cache/rerlhf/).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import traceback
from pathlib import Path

import torch
import yaml

from fairl import lm
from fairl.config import ConfigError
from fairl.data.scorers import get_scorer
from fairl.lm.rlhf import load_policy, run_identity, train_policy
from fairl.paths import cache_dir
from fairl.runs import write as runs
from fairl.runs.provenance import environment_tags, worker_identity
from fairl.runs.read import load_policy_runs, policy_runs
from fairl.runs.reap import reap_runs
from fairl.runs.store import client, default_tracking_uri, experiment_id, resolve_tracking_uri
from fairl.study.rerlhf_eval import evaluate_policy, load_study_world, make_reward, toxicity_metrics
from fairl.study.rerlhf_spec import Study, load_study, world_prompts
from fairl.study.worlds import SuiteWorld, rerlhf_on_world


def policy_dir(identity: str) -> Path:
    return cache_dir() / "rerlhf" / identity


def run_cell(study: Study, source_name: str, seed: int, uri: str, experiment: str, *,
             world=None, progress: bool = True, say=print) -> str:
    """Train (or reuse) and evaluate one (source, seed); the run ends FINISHED or FAILED."""
    source = study.spec.sources[source_name]
    config_hash = study.config_hash(source_name, seed)
    tags = {**environment_tags(), **study.spec.tags, "kind": "policy",
            "study": study.name, "source": source_name, "source_kind": source.kind,
            "seed": str(seed), "world": study.spec.world["name"],
            "dataset_hash": study.dataset_hash, "config_hash": config_hash,
            "study_fingerprint": study.fingerprint(), "worker": worker_identity()}
    run_id = runs.start_run(uri, experiment, f"{source_name}-seed{seed}", tags)
    try:
        _run_cell(study, source_name, seed, uri, run_id, world, progress, say)
    except KeyboardInterrupt:
        runs.kill_run(uri, run_id, "interrupted (Ctrl-C / SIGTERM); rerun to resume")
        raise
    except Exception as error:  # noqa: BLE001 (one failed cell is recorded, the grid goes on)
        runs.fail_run(uri, run_id, error)
        say(f"  FAILED: {runs.error_line(error)} (run {run_id}, traceback.txt)")
        traceback.print_exc(file=sys.stderr)
        return run_id
    runs.end_run(uri, run_id)
    return run_id


def _run_cell(study: Study, source_name: str, seed: int, uri: str, run_id: str, world,
              progress: bool, say) -> None:
    """The reward, its RLHF run (none for the base), the evaluation; all logged to `run_id`."""
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
    _evaluate(study, seed, policy, reward, eval_prompts, curves, metrics, uri, run_id, progress,
              say)


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
              uri: str, run_id: str, progress: bool, say) -> None:
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
                      ("tox_rate_bilstm", "tox_rate_profanity", "kl_to_base", "ppl_base")
                      if key in metrics)
    say(f"  done: {shown}")


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _yaml(values: dict) -> str:
    return yaml.safe_dump(json.loads(json.dumps(values, default=str)), sort_keys=False)


# --- the grid ------------------------------------------------------------------------------

def run_study(path: str | Path, tracking_uri: str | None = None, only: list[str] | None = None,
              seeds: list[int] | None = None, progress: bool = True,
              world: SuiteWorld | None = None) -> dict[tuple[str, int], str]:
    """Run every (source, seed) cell not already FINISHED; returns cell -> run status.

    `world`: run on it instead of the file's (fairl.study.worlds.rerlhf_on_world)."""
    study = load_study(path, rerlhf_on_world(path, world))
    unknown = [name for name in only or [] if name not in study.spec.sources]
    if unknown:
        raise ConfigError(f"--only: unknown source(s) {unknown}; the study has "
                          f"{', '.join(study.spec.sources)}")
    uri = resolve_tracking_uri(tracking_uri)
    experiment = experiment_id(uri, study.name)
    say = print if progress else (lambda *args, **kwargs: None)
    for message in reap_runs(uri, experiment):
        say(f"marked orphaned {message}")
    done = {run.tags.get("config_hash"): run for run in policy_runs(uri, experiment)}
    cells = study.cells(only, seeds)
    statuses: dict[tuple[str, int], str] = {}
    world = None
    started = time.perf_counter()
    for index, (source, seed) in enumerate(cells, 1):
        config_hash = study.config_hash(source, seed)
        if config_hash in done:
            statuses[(source, seed)] = runs.FINISHED
            say(f"[{index}/{len(cells)}] {source} seed {seed}: already FINISHED "
                f"(run {done[config_hash].run_id})")
            continue
        say(f"[{index}/{len(cells)}] {source} seed {seed} "
            f"({(time.perf_counter() - started) / 60:.1f} min so far)")
        if world is None and study.spec.sources[source].kind == "irl":
            world = load_study_world(study)
        run_id = run_cell(study, source, seed, uri, experiment, world=world, progress=progress,
                          say=say)
        statuses[(source, seed)] = client(uri).get_run(run_id).info.status
    say(f"study {study.name}: {sum(s == runs.FINISHED for s in statuses.values())}/"
        f"{len(cells)} cells FINISHED in {(time.perf_counter() - started) / 60:.1f} min; "
        f"MLflow experiment {study.name!r} at {uri}")
    return statuses


def status_table(path: str | Path, tracking_uri: str | None = None,
                 world: SuiteWorld | None = None) -> str:
    """One line per cell: status of its latest run and its key metrics."""
    study = load_study(path, rerlhf_on_world(path, world))
    uri = resolve_tracking_uri(tracking_uri)
    found = client(uri).get_experiment_by_name(study.name)
    every = [] if found is None else policy_runs(uri, found.experiment_id, status=None)
    latest = {run.tags.get("config_hash"): run for run in every}
    keys = ("tox_rate_bilstm", "tox_rate_profanity", "kl_to_base", "ppl_base")
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


def study_runs(uri: str, name: str, study_file: str):
    """The FINISHED policy runs of the study's latest configuration (for analysis/rerlhf.py)."""
    hint = f"fairl rerlhf run {study_file}" + (
        "" if uri == default_tracking_uri() else f" --tracking-uri {uri}")
    return load_policy_runs(uri, name, study_file, hint)
