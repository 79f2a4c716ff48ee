"""Benchmark: per-trial overhead of Optuna + MLflow against the fit time, on the smoke world.

Runs the smoke study (studies/smoke.yaml; --trials of them) in a temporary store and times,
inside the same run, each trial's fit work (`fairl.study.trial.evaluate`: every seed's fit and
metrics) and everything else the trial costs: the study lock, reaping and counting,
Optuna's ask/tell on the journal, MLflow run creation, the log_batch calls, artifacts and
termination. Overhead ratio = (trial time - fit time) / fit time; goal < 10 %. One-time
costs (imports, creating the MLflow database) are printed apart. Two lines: the mean over
all trials (the first trial's fit includes loading the world, once per process), and the
steady state, trials 2..n: median objective and median fit, plus the mean per-trial cost of
the worker loop around the objective (Optuna's ask/tell on the journal, lock, reap).

    python bench/tracking.py [--trials 20] [--store DIR] [--study studies/smoke.yaml]
                             [--curve-points N]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

TIMES: dict[str, list[float]] = collections.defaultdict(list)


def timed(module, name: str, label: str) -> None:
    """Wrap module.name so each call's wall time is appended to TIMES[label]."""
    original = getattr(module, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label].append(time.perf_counter() - start)

    setattr(module, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--store", help="store directory (default: a new temporary one on disk)")
    parser.add_argument("--study", default=str(Path(__file__).resolve().parents[1]
                                               / "studies" / "smoke.yaml"))
    parser.add_argument("--curve-points", type=int,
                        help="override the study's curve_points (rounds logged per curve)")
    args = parser.parse_args()
    store = Path(args.store or tempfile.mkdtemp(prefix="fairl-bench-tracking-"))
    if args.curve_points:
        import yaml

        values = yaml.safe_load(Path(args.study).read_text())
        values["curve_points"] = args.curve_points
        args.study = str(store / Path(args.study).name)
        Path(args.study).write_text(yaml.safe_dump(values))
    os.environ["FAIRL_MLRUNS"] = str(store)
    for name in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE"):
        os.environ.pop(name, None)

    start = time.perf_counter()
    from fairl.runs import store as runs_store
    from fairl.runs import write
    from fairl.study import runner as study
    from fairl.study import trial

    runs_store.client(runs_store.resolve_tracking_uri()).search_experiments()
    import optuna  # noqa: F401

    study.load_study(args.study)
    setup = time.perf_counter() - start

    timed(study, "work", "worker loop (all trials)")
    timed(trial, "evaluate", "fit (evaluate: every seed's fit + metrics)")
    timed(study, "objective", "trial (objective)")
    timed(study, "reap_trials", "reap + count (per loop)")
    for name in ("start_run", "log_run", "log_text", "log_world_inputs", "end_run"):
        timed(write, name, f"mlflow {name}")
    from fairl import models

    timed(models, "log_reward_model", "mlflow log_reward_model")
    loop_start = time.perf_counter()
    report = study.run_study(args.study, trials=args.trials, progress=False)
    loop = time.perf_counter() - loop_start
    assert report.tally.complete == args.trials, report

    n = args.trials
    fit = sum(TIMES["fit (evaluate: every seed's fit + metrics)"]) / n
    per_trial = sum(TIMES["worker loop (all trials)"]) / n
    launch = loop - sum(TIMES["worker loop (all trials)"])
    overhead = per_trial - fit
    spec = study.load_study(args.study).spec
    medium = "tmpfs" if str(store).startswith("/dev/shm") else "disk"
    print(f"store {store} (journal + SQLite on {medium}); study {Path(args.study).name}: {n} trials x {len(spec.seeds)} seeds, "
          f"{spec.fit.get('rounds', 100)} rounds (curves: {spec.curve_points or 'every'} "
          f"points), world {spec.world['name']} {spec.world['options']}")
    print(f"one-time setup (imports, MLflow schema): {setup:.2f} s; per launch (study, "
          f"experiment, launch run, reaping at start and end): {launch:.2f} s")
    print(f"per trial: {per_trial * 1000:.1f} ms total, fit {fit * 1000:.1f} ms, "
          f"Optuna + MLflow overhead {overhead * 1000:.1f} ms")
    print(f"overhead / fit time = {overhead / fit:.1%}  (goal < 10 %)")
    objectives = TIMES["trial (objective)"]
    fits = TIMES["fit (evaluate: every seed's fit + metrics)"]
    around = (sum(TIMES["worker loop (all trials)"]) - sum(objectives)) / n
    steady_trial = statistics.median(objectives[1:] or objectives) + around
    steady_fit = statistics.median(fits[1:] or fits)
    print(f"steady state (trials 2..{n}, medians; the first trial loads the world): per trial "
          f"{steady_trial * 1000:.1f} ms, fit {steady_fit * 1000:.1f} ms, overhead "
          f"{(steady_trial - steady_fit) * 1000:.1f} ms = {(steady_trial - steady_fit) / steady_fit:.1%} "
          f"of the fit time")
    print("breakdown (mean ms per call, calls):")
    for label, values in sorted(TIMES.items()):
        print(f"  {label:45s} {statistics.fmean(values) * 1000:8.2f}  x{len(values)}")


if __name__ == "__main__":
    main()
