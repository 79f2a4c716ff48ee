"""Benchmark: trials per minute of a fa_sweep-like study on the default world, in one run.

    python bench/sweep.py [--trials 100] [--cases 1,2,1p,2p,1b32,1b32p] [--study FILE]
                          [--keep DIR]

Each case runs the study file (its search space, 3 seeds, 100 rounds; only the name, the
trial count and, for `p` cases, `pruner: {type: median, every: 20}` changed) as
`fairl study run --workers K` in a subprocess, in a fresh store (journal + SQLite), on the
default world's cached embeddings. Case names: K workers, `p` = with pruning. The first case
is the baseline every ratio is against (default: 1 worker, no pruning), measured in the same
run, so a busy machine penalises all alike. `bK` = batched trials (`--batch K`: K trials,
all their seeds, in one fit pass; fairl.study.batch), e.g. `1b32`, `1b32p`.

Printed per case: the whole command's wall time (imports, world load, workers' start-up,
the launch's references and verdicts), the steady-state throughput (trials per minute from
the first trial's start to the last trial's end, from Optuna's own timestamps), the trials
pruned, the ratio of its throughput to the baseline's, and the CPU time of the command
(user + system, all its processes) over its wall time: how many of the cores it kept busy,
which bounds what more workers can add.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def study_file(source: Path, folder: Path, name: str, trials: int, prune: bool) -> Path:
    values = yaml.safe_load(source.read_text())
    values.update(name=name, trials=trials)
    if prune:
        values["pruner"] = {"type": "median", "every": 20, "startup_trials": 5}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def run_case(source: Path, root: Path, case: str, trials: int) -> dict:
    prune = case.endswith("p")
    workers, _, batch = case.rstrip("p").partition("b")
    workers, batch = int(workers), int(batch or 1)
    store = root / f"store-{case}"
    store.mkdir(parents=True)
    name = f"bench_sweep_{case}"
    path = study_file(source, root, name, trials, prune)
    env = {**os.environ, "FAIRL_MLRUNS": str(store)}
    for variable in ("FAIRL_TRACKING_URI", "MLFLOW_TRACKING_URI", "FAIRL_STORAGE"):
        env.pop(variable, None)
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "fairl", "study", "run", str(path),
                           "--workers", str(workers), "--batch", str(batch)], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"case {case}: fairl study run exited {done.returncode}\n"
                         f"{done.stderr[-3000:]}")
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(store / "optuna.journal"))))
    ended = [t for t in study.trials if t.datetime_complete is not None]
    first = min(t.datetime_start for t in ended)
    last = max(t.datetime_complete for t in ended)
    span = (last - first).total_seconds()
    states = [t.state.name for t in ended]
    best = max((t.value for t in ended if t.state.name == "COMPLETE"), default=float("nan"))
    return {"case": case, "workers": workers, "batch": batch, "best": best, "prune": prune,
            "wall": wall, "cpu": cpu,
            "per_minute": len(ended) / span * 60, "span": span,
            "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--cases", default="1,2,1p,2p",
                        help="comma-separated: K workers, p = with pruning; first = baseline")
    parser.add_argument("--study", default=str(ROOT / "studies" / "fa_sweep.yaml"))
    parser.add_argument("--keep", help="put the stores here (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="fairl-bench-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), "unknown CPU") \
        if Path("/proc/cpuinfo").exists() else "unknown CPU"
    print(f"{args.trials} trials per case of {Path(args.study).name} (3 seeds x 100 rounds on "
          f"the default world), {os.cpu_count()} cores ({cpu}), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; stores under {root}")
    baseline = None
    for case in args.cases.split(","):
        result = run_case(Path(args.study), root, case.strip(), args.trials)
        baseline = baseline or result
        ratio = result["per_minute"] / baseline["per_minute"]
        print(f"  {result['workers']} worker(s), batch {result['batch']:3d}"
              f"{' + pruning' if result['prune'] else '':10s}: best val_f1 {result['best']:.4f}  "
              f"wall {result['wall']:7.1f} s   steady {result['per_minute']:6.1f} trials/min "
              f"({result['span']:.1f} s from first start to last end)   "
              f"complete {result['complete']}, pruned {result['pruned']}, failed "
              f"{result['failed']}   throughput x{ratio:.2f} of {baseline['case']}   "
              f"CPU {result['cpu']:.0f} s = {result['cpu'] / result['wall']:.2f} cores busy",
              flush=True)


if __name__ == "__main__":
    main()
