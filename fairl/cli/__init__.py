"""The `fairl` command line: all argparse and cmd_* functions; the only importer of analysis/.

One module per command group adds its subcommands. Heavy libraries (torch, mlflow, optuna)
are imported inside the cmd_* functions, so `fairl --help` and config errors stay fast.
"""

from __future__ import annotations

import argparse
import sys

from fairl import __version__
from fairl.cli import demo, fit, report, rerlhf, score, study, world
from fairl.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairl",
        description="Failure-aware inverse RL (FA-IRL) for LLM alignment: recover the reward an "
                    "aligned LM learned, run studies over the method's knobs, track every run in "
                    "MLflow, rebuild the paper's figures and tables.")
    parser.add_argument("--version", action="version", version=f"fairl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    fit.add_commands(commands)  # fit
    demo.add_commands(commands)  # demo
    world.add_commands(commands)  # world build|info
    study.add_commands(commands)  # study run|list|status|best, ui, dashboard
    score.add_commands(commands)  # score
    report.add_commands(commands)  # report
    rerlhf.add_commands(commands)  # rerlhf run|status
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
