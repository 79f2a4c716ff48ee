"""`fairl world build|info`: build a world's pair dataset from scratch, or print its card."""

from __future__ import annotations

import argparse
import json

import yaml

from fairl.config import ConfigError
from fairl.paths import DEFAULT_WORLD_DIR


def cmd_world_build(args: argparse.Namespace) -> int:
    from fairl.data import build_config  # light: fails fast on missing inputs

    if args.plan:
        from fairl.data.plan import world_plan  # light: no torch, nothing opened

        config = build_config.read_build_config(args.config, sets=args.set or ())
        where = str(args.config or "world build config")
        print(world_plan(config, where, args.out), flush=True)
        build_config.check_hub_inputs(config, where)  # offline: names what to download
        return 0
    config = build_config.load_build_config(args.config, sets=args.set or ())
    from fairl.data.build import build_world  # heavy: LMs, torch

    out = args.out or build_config.default_out(config.name)
    pairset = build_world(config, out)
    run_id = record_world_build(pairset, args.tracking_uri)
    print(f"MLflow: experiment world_build, run {run_id} (RLHF curves, card)")
    return cmd_world_info(argparse.Namespace(path=str(out), card=False))


def record_world_build(pairset, tracking_uri: str | None) -> str:
    """The build as an MLflow run: config, RLHF curves per step, toxicity/KL, the card."""
    from fairl.runs.write import record_run  # heavy: mlflow

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


def cmd_world_import(args: argparse.Namespace) -> int:
    from fairl.data.importer import Columns, import_world  # heavy: datasets, judges

    rewards = None
    if args.reward_cols:
        rewards = tuple(part.strip() for part in args.reward_cols.split(","))
        if len(rewards) != 2 or not all(rewards):
            raise ConfigError(f"--reward-cols {args.reward_cols}: two names, r_T,r_NT")
    columns = Columns(args.prompt_col, args.aligned_col, args.base_col, args.id_col, rewards)
    pairset = import_world(args.source, args.out, args.format, columns, args.name)
    print(f"imported {len(pairset)} pairs from {args.source} into {args.out} "
          f"(content hash {pairset.content_hash[:19]})")
    print(f"use it: world: {{name: pairset, options: {{path: {args.out}}}}}")
    return cmd_world_info(argparse.Namespace(path=str(args.out), card=False))


def parse_options(items: list[str] | None) -> dict:
    """--option KEY=VALUE pairs as a dict; each VALUE is read as YAML (0.5, null, true, text)."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item}: expected KEY=VALUE (e.g. beta=0.5)")
        options[key] = yaml.safe_load(value)
    return options


def cmd_world_info(args: argparse.Namespace) -> int:
    if getattr(args, "world", None) == "sir":
        return cmd_sir_info(args)
    if getattr(args, "world", None) not in (None, "default", "pairset"):
        raise ConfigError(f"--world {args.world}: `world info` describes sir or a PairSet "
                          "(default, pairset with --path)")
    from fairl.data.card import card_markdown, world_summary
    from fairl.data.pairset import PairSet  # heavy: torch scorers

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


def cmd_sir_info(args: argparse.Namespace) -> int:
    from fairl.data.sir import world_summary
    from fairl.worlds import check_world_options, load_world

    options = parse_options(args.option)
    if args.path:
        options["path"] = args.path
    check_world_options("sir", options, "--option")  # one ConfigError line before any work
    print(world_summary(load_world("sir", options)))
    return 0


def add_commands(commands) -> None:
    world = commands.add_parser(
        "world", help="build or describe a world's pair dataset",
        description="The embedded default world is committed under fairl/data/default_world; "
                    "`world build` regenerates it from scratch (prompts, RLHF, generation, "
                    "scoring; resumable), `world info` prints its card.")
    world_commands = world.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    world_build = world_commands.add_parser(
        "build", help="build a pair dataset from scratch (default: the embedded world)",
        description="Run every stage of fairl.data.build (cached and resumable under "
                    ".cache/worlds/). Config fields: fairl/data/build_config.py WorldBuildConfig.")
    world_build.add_argument("--config", metavar="FILE.yaml", help="WorldBuildConfig fields")
    world_build.add_argument("--out", help="output folder (default: the embedded world's)")
    world_build.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    world_build.add_argument("--set", action="append", metavar="KEY=VALUE",
                             help="override a config field (repeatable; dots for nesting), "
                                  "e.g. --set max_prompts=100 --set rlhf.steps=10")
    world_build.add_argument("--plan", action="store_true",
                             help="print every stage, its size, the device, disk, an estimated "
                                  "time and each hub input (present/missing), and do nothing; "
                                  "offline with inputs missing it exits 2 naming them")
    world_build.set_defaults(handler=cmd_world_build)
    imp = world_commands.add_parser(
        "import", help="your own pairs (CSV, JSONL, Parquet, HF dataset) as a pairset world",
        description="Read prompt / aligned output / base output rows, check them (errors name "
                    "the row or column), score them with the judges (or keep --reward-cols) "
                    "and save a PairSet with its card: world {name: pairset, options: "
                    "{path: DIR}}.")
    imp.add_argument("source", metavar="SRC", help="file, save_to_disk folder or hub name")
    imp.add_argument("--out", required=True, metavar="DIR", help="PairSet folder to write")
    imp.add_argument("--format", choices=["csv", "jsonl", "parquet", "hf"],
                     help="default: from the file name (a folder: hf)")
    imp.add_argument("--prompt-col", default="prompt")
    imp.add_argument("--aligned-col", default="o_T", help="the aligned (preferred) output")
    imp.add_argument("--base-col", default="o_NT", help="the base output")
    imp.add_argument("--id-col", help="a unique row id, kept as source_id")
    imp.add_argument("--reward-cols", metavar="R_T,R_NT",
                     help="given r* of both outputs (default: scored by the judges)")
    imp.add_argument("--name", help="world name in the card (default: the source's name)")
    imp.set_defaults(handler=cmd_world_import)
    world_info = world_commands.add_parser(
        "info", help="print a world's card: sizes, T→NT, toxicity before/after, KL, build time")
    world_info.add_argument("--path", help="PairSet folder (default: the embedded world)")
    world_info.add_argument("--card", action="store_true", help="also print the full card")
    world_info.add_argument("--world", help="a named world: sir (the SIR world over the PairSet, "
                            "fairl.data.sir) or default / pairset (the card)")
    world_info.add_argument("--option", action="append", metavar="KEY=VALUE",
                            help="a world option (repeatable), e.g. --option beta=0.5")
    world_info.set_defaults(handler=cmd_world_info)
