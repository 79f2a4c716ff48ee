"""`fairl rerlhf run|status`: the re-RLHF grid of a study file (fairl.study.rerlhf)."""

from __future__ import annotations

import os
import sys


def cmd_run(args) -> int:
    if args.threads:
        os.environ["FAIRL_THREADS"] = str(args.threads)  # fairl.lm.configure_threads reads it
    from fairl.study.worlds import StudySkipped, parse_world

    world = parse_world(args.world) if args.world else None
    from fairl.study.rerlhf import run_study  # heavy: LMs, torch

    try:
        statuses = run_study(args.study, args.tracking_uri, args.only, args.seeds, world=world)
    except StudySkipped as skipped:
        print(skipped)
        return 0
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun `fairl rerlhf run {args.study}` to resume (finished cells "
              "are skipped, a killed RLHF run resumes from its checkpoint)", file=sys.stderr)
        return 130
    return 0 if all(status == "FINISHED" for status in statuses.values()) else 1


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
                    "(two judges), KL, perplexity and repetition; one MLflow run per cell.")
    actions = parser.add_subparsers(dest="rerlhf_command", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="run the study's cells (finished ones are skipped)")
    run.add_argument("study", help="study file, e.g. studies/rerlhf/rerlhf.yaml")
    run.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    run.add_argument("--only", nargs="+", metavar="SOURCE", help="run only these sources")
    run.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                     help="run only these seeds (default: the study's)")
    run.add_argument("--world", metavar="SPEC", help="run on this text world instead of the "
                     "file's (default, or pairset:path=DIR): its base LM, r* and LoRA targets")
    run.add_argument("--threads", type=int,
                     help="torch CPU threads (sets $FAIRL_THREADS; default: fairl.lm's choice)")
    run.set_defaults(handler=cmd_run)
    status = actions.add_parser("status", help="each cell's latest run and key metrics")
    status.add_argument("study", help="study file")
    status.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    status.add_argument("--world", metavar="SPEC", help="the world the study ran on")
    status.set_defaults(handler=cmd_status)
