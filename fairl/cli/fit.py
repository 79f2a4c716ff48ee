"""`fairl fit`: one reward on a world, its metrics on the training and held-out pairs."""

from __future__ import annotations

import argparse

from fairl.config import apply_overrides, load_yaml
from fairl.experiment import experiment_config

METRIC_ORDER = ["accuracy", "f1", "roc_auc", "pairwise_accuracy", "starc"]


def metrics_table(rows: dict[str, dict[str, float]]) -> str:
    """Rows of metrics (name -> {metric: value}) as an aligned text table."""
    names = [m for m in METRIC_ORDER if any(m in row for row in rows.values())]
    width = max([len("run")] + [len(label) for label in rows])
    lines = ["  ".join([f"{'run':<{width}}"] + [f"{m:>17}" for m in names])]
    for label, row in rows.items():
        cells = [f"{row[m]:>17.4f}" if m in row else f"{'-':>17}" for m in names]
        lines.append("  ".join([f"{label:<{width}}"] + cells))
    return "\n".join(lines)


def cmd_fit(args: argparse.Namespace) -> int:
    values = load_yaml(args.config) if args.config else {}
    overrides = [*args.set, *([f"fit.device={args.device}"] if args.device else [])]
    config = experiment_config(apply_overrides(values, overrides), where=args.config or "config")
    from fairl.experiment import run_experiment  # heavy: the fit imports torch

    outcome = run_experiment(config.world, config.fit)
    last = outcome.result.history[-1]
    print(f"world={config.world.name} ({outcome.world.dataset_hash})  method={config.fit.method}  "
          f"objective={config.fit.objective}  train pairs={len(outcome.train)}  "
          f"test pairs={len(outcome.world.test)}  final loss={last['loss']:.4f}")
    print(metrics_table({"train": outcome.train_metrics, "test": outcome.test_metrics}))
    if args.save:
        print(f"saved reward heads to {outcome.result.save(args.save)}")
    return 0


def add_commands(commands) -> None:
    fit = commands.add_parser(
        "fit", help="fit one reward on a world and print its metrics",
        description="Fit FA-IRL or standard IRL on a named world (YAML config with `world:` and "
                    "`fit:` sections; every FitConfig field is documented in fairl/irl/config.py) "
                    "and print accuracy, F1, ROC-AUC, pairwise accuracy and STARC on the "
                    "training and held-out pairs.")
    fit.add_argument("--config", metavar="FILE.yaml", help="experiment config (default: planted world)")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set fit.failure_mode=none (repeatable)")
    fit.add_argument("--device", metavar="DEVICE",
                     help="auto, cpu, cuda or cuda:N: sets fit.device (default: the config's, cpu)")
    fit.add_argument("--save", metavar="FILE.npz", help="save the fitted reward heads")
    fit.set_defaults(handler=cmd_fit)
