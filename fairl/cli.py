"""`fairl` command line. Each area adds its own subcommands from its module."""

from __future__ import annotations

import argparse
import sys

from fairl import __version__
from fairl.config import ConfigError
from fairl.report import add_report_commands
from fairl.rerlhf import add_rerlhf_commands
from fairl.study import add_study_commands

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
    from fairl.config import apply_overrides, load_yaml
    from fairl.experiment import experiment_config, run_experiment

    values = load_yaml(args.config) if args.config else {}
    config = experiment_config(apply_overrides(values, args.set), where=args.config or "config")
    outcome = run_experiment(config.world, config.fit)
    last = outcome.result.history[-1]
    print(f"world={config.world.name} ({outcome.world.dataset_hash})  method={config.fit.method}  "
          f"objective={config.fit.objective}  train pairs={len(outcome.train)}  "
          f"test pairs={len(outcome.world.test)}  final loss={last['loss']:.4f}")
    print(metrics_table({"train": outcome.train_metrics, "test": outcome.test_metrics}))
    if args.save:
        print(f"saved reward heads to {outcome.result.save(args.save)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fairl.demo import run_demo

    return run_demo(tuple(args.studies), tracking_uri=args.tracking_uri, storage=args.storage)


def cmd_world_build(args: argparse.Namespace) -> int:
    from fairl.data.build import DEFAULT_WORLD_DIR, build_world, load_build_config

    config = load_build_config(args.config)
    out = args.out or (DEFAULT_WORLD_DIR if config.name == "default" else f"worlds/{config.name}")
    pairset = build_world(config, out)
    run_id = record_world_build(pairset, args.tracking_uri)
    print(f"MLflow: experiment world_build, run {run_id} (RLHF curves, card)")
    return cmd_world_info(argparse.Namespace(path=str(out), card=False))


def record_world_build(pairset, tracking_uri: str | None) -> str:
    """The build as an MLflow run: config, RLHF curves per step, toxicity/KL, the card."""
    import json

    from fairl.tracking import record_run

    card = pairset.card
    metrics = {"pairs": card["sizes"]["all"]["pairs"], "tnt_pairs": card["tnt"]["count"],
               "tnt_fraction": card["tnt"]["fraction"], "build_minutes": card["build_seconds"] / 60}
    for judge, stats in card["toxicity"]["all"].items():
        metrics.update({f"{judge}_base_toxic_rate": stats["base_rate"],
                        f"{judge}_aligned_toxic_rate": stats["aligned_rate"]})
    if card.get("mean_kl", {}).get("all") is not None:
        metrics["mean_kl"] = card["mean_kl"]["all"]
    return record_run(
        tracking_uri, "world_build", card["name"], params=card["build_config"], metrics=metrics,
        curves=card.get("rlhf_curves", {}),
        tags={"world": card["name"], "dataset_hash": card["content_hash"], "kind": "world_build"},
        texts={"card.json": json.dumps(card, indent=1, ensure_ascii=False)})


def cmd_world_info(args: argparse.Namespace) -> int:
    from fairl.data.build import DEFAULT_WORLD_DIR
    from fairl.data.pairset import PairSet, card_markdown

    path = args.path or DEFAULT_WORLD_DIR
    try:
        card = PairSet.load(path).card
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: {error} (build it: fairl world build)") from None
    print(world_summary(card, path))
    if args.card:
        print()
        print(card_markdown(card))
    return 0


def world_summary(card: dict, path) -> str:
    """The numbers a reader checks first: size, T→NT, toxicity before/after, KL, build time."""
    sizes = card["sizes"]["all"]
    lines = [f"world {card['name']!r} at {path}  (content hash {card['content_hash'][:19]})",
             f"  models: base = {card['models'].get('base')}; aligned = {card['models'].get('aligned')}",
             f"  pairs: {sizes['pairs']} over {sizes['prompts']} prompts  "
             + "  ".join(f"{split}={card['sizes'][split]['pairs']}"
                         for split in ("train", "validation", "test") if split in card["sizes"]),
             f"  T→NT pairs: {card['tnt']['count']} ({card['tnt']['fraction']:.1%})"]
    for judge, stats in card["toxicity"]["all"].items():
        lines.append(f"  toxicity by {judge:<10} base {stats['base_rate']:.1%} (mean "
                     f"{stats['base_mean']:.3f})  ->  aligned {stats['aligned_rate']:.1%} "
                     f"(mean {stats['aligned_mean']:.3f})")
    kl = card.get("mean_kl", {}).get("all")
    lines.append(f"  mean KL(aligned ‖ base) per continuation: "
                 f"{'n/a' if kl is None else f'{kl:.3f} nats'}")
    stages = card.get("build_config", {}).get("stage_seconds", {})
    detail = ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items())
    lines.append(f"  build time: {card.get('build_seconds', 0) / 60:.1f} min, stage times summed "
                 f"({detail})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairl",
        description="Failure-aware inverse RL (FA-IRL) for LLM alignment: recover the reward an "
                    "aligned LM learned, run studies over the method's knobs, track every run in "
                    "MLflow, rebuild the paper's figures and tables.")
    parser.add_argument("--version", action="version", version=f"fairl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = commands.add_parser(
        "fit", help="fit one reward on a world and print its metrics",
        description="Fit FA-IRL or standard IRL on a named world (YAML config with `world:` and "
                    "`fit:` sections; every FitConfig field is documented in fairl/irl/config.py) "
                    "and print accuracy, F1, ROC-AUC, pairwise accuracy and STARC on the "
                    "training and held-out pairs.")
    fit.add_argument("--config", metavar="FILE.yaml", help="experiment config (default: planted world)")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set fit.failure_mode=none (repeatable)")
    fit.add_argument("--save", metavar="FILE.npz", help="save the fitted reward heads")
    fit.set_defaults(handler=cmd_fit)

    from fairl.demo import DEMO_STUDIES

    demo = commands.add_parser(
        "demo", help="the main job: the paper's studies on the embedded default world + report",
        description="Describe the embedded default world (base vs RLHF-detoxified SmolLM2 "
                    "outputs), run the paper's studies on it (standard IRL vs FA-IRL, ablations, "
                    "T→NT fraction, FA-IRL sweep; each resumes), and rebuild reports/REPORT.md.")
    demo.add_argument("--studies", nargs="+", default=list(DEMO_STUDIES), metavar="NAME",
                      help=f"studies/<NAME>.yaml to run (default: {' '.join(DEMO_STUDIES)})")
    demo.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    demo.add_argument("--storage", help="Optuna storage (default: mlruns/optuna.journal)")
    demo.set_defaults(handler=cmd_demo)

    world = commands.add_parser(
        "world", help="build or describe a world's pair dataset",
        description="The embedded default world is committed under fairl/data/default_world; "
                    "`world build` regenerates it from scratch (prompts, RLHF, generation, "
                    "scoring; resumable), `world info` prints its card.")
    world_commands = world.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    world_build = world_commands.add_parser(
        "build", help="build a pair dataset from scratch (default: the embedded world)",
        description="Run every stage of fairl.data.build (cached and resumable under "
                    ".cache/worlds/). Config fields: fairl/data/build.py WorldBuildConfig.")
    world_build.add_argument("--config", metavar="FILE.yaml", help="WorldBuildConfig fields")
    world_build.add_argument("--out", help="output folder (default: the embedded world's)")
    world_build.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    world_build.set_defaults(handler=cmd_world_build)
    world_info = world_commands.add_parser(
        "info", help="print a world's card: sizes, T→NT, toxicity before/after, KL, build time")
    world_info.add_argument("--path", help="PairSet folder (default: the embedded world)")
    world_info.add_argument("--card", action="store_true", help="also print the full card")
    world_info.set_defaults(handler=cmd_world_info)

    add_study_commands(commands)  # study run|list|status, ui, dashboard
    add_report_commands(commands)  # report
    add_rerlhf_commands(commands)  # rerlhf run|status
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"fairl: configuration error:\n{error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
