"""`fairl rerlhf run|status`: run = `fairl study run` of a re-RLHF study; status = its cells."""

from __future__ import annotations

import os

from fairl.cli.study import add_run_options, cmd_study_run
from fairl.config import ConfigError


def cmd_run(args) -> int:
    """`fairl study run` (a re-RLHF study is a study: one trial per (source, seed) cell)."""
    if args.only or args.seeds:
        raise ConfigError(
            "--only / --seeds: dropped: re-RLHF runs as a study (`fairl study run`), one trial "
            "per (source, seed) cell of the file's grid; to run fewer cells, list only those "
            "sources and seeds in a copy of the file, keep its `name:` and give it its own "
            "--storage: cells FINISHED before with the same settings are reused, not retrained")
    if args.threads:
        os.environ["FAIRL_THREADS"] = str(args.threads)  # fairl.lm.configure_threads reads it
    return cmd_study_run(args)


def cmd_status(args) -> int:
    from fairl.study.worlds import parse_world

    world = parse_world(args.world) if args.world else None
    from fairl.study.rerlhf import status_table  # heavy: LMs, torch

    print(status_table(args.study, args.tracking_uri, world))
    return 0


def add_commands(commands) -> None:
    """`fairl rerlhf run|status`."""
    parser = commands.add_parser(
        "rerlhf", help="re-run RLHF of the base LM on recovered rewards and measure toxicity",
        description="Train the base LM against each reward source of a study file (FA-IRL, "
                    "standard IRL, ground-truth r*, none) on every seed, with the same "
                    "KL-regularised trainer as the world's aligned model; evaluate toxicity "
                    "(two judges), KL, perplexity and repetition; one Optuna trial and one "
                    "MLflow run per cell (`fairl rerlhf run` = `fairl study run`).")
    actions = parser.add_subparsers(dest="rerlhf_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="= fairl study run: run the study's cells (finished ones are kept)")
    run.add_argument("study_file", metavar="STUDY.yaml",
                     help="study file, e.g. studies/rerlhf/rerlhf.yaml")
    add_run_options(run)  # as `fairl study run`, which this is
    run.add_argument("--threads", type=int,
                     help="torch CPU threads (sets $FAIRL_THREADS; default: fairl.lm's choice)")
    run.add_argument("--only", nargs="+", metavar="SOURCE", help="dropped (say why)")
    run.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="dropped (say why)")
    run.set_defaults(handler=cmd_run, batch=None)
    status = actions.add_parser("status", help="each cell's latest run and key metrics")
    status.add_argument("study", help="study file")
    status.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    status.add_argument("--world", metavar="SPEC", help="the world the study ran on")
    status.set_defaults(handler=cmd_status)
