"""The `fairl` command line: all argparse and cmd_* functions; the only importer of analysis/.

One module per command group adds its subcommands. Heavy libraries (torch, mlflow, optuna)
are imported inside the cmd_* functions, so `fairl --help` and config errors stay fast.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from fairl import __version__
from fairl.cli import demo, fit, paper, report, rerlhf, score, study, world
from fairl.config import ConfigError
from fairl.paths import StoreError

# OSErrors of the environment (disk full, read-only, permissions), told in one line; any
# other exception is a bug and keeps its traceback.
ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "free space on that disk (or point FAIRL_MLRUNS / --storage elsewhere)",
    errno.EDQUOT: "free space within your quota (or point FAIRL_MLRUNS / --storage elsewhere)",
    errno.EFBIG: "the file hit a size limit (ulimit -f); raise it or use another store",
    errno.EROFS: "the file system is read-only: point FAIRL_MLRUNS / --storage / "
                 "--tracking-uri at a writable directory",
    errno.EACCES: "make it writable by you, or point FAIRL_MLRUNS / --storage elsewhere",
    errno.EPERM: "make it writable by you, or point FAIRL_MLRUNS / --storage elsewhere",
    errno.EIO: "the disk reported an I/O error: check it, then rerun",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairl",
        description="Failure-aware inverse RL (FA-IRL) for LLM alignment: recover the reward an "
                    "aligned LM learned, run studies over the method's knobs, track every run in "
                    "MLflow, rebuild the paper's figures and tables.")
    parser.add_argument("--version", action="version", version=f"fairl {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of configuration, store and disk errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    fit.add_commands(commands)  # fit
    demo.add_commands(commands)  # demo
    paper.add_commands(commands)  # paper
    world.add_commands(commands)  # world build|info
    study.add_commands(commands)  # study run|list|status|best, ui, dashboard
    score.add_commands(commands)  # score
    report.add_commands(commands)  # report
    rerlhf.add_commands(commands)  # rerlhf run|status
    return parser


def entry() -> None:
    """The `fairl` command (console script and `python -m fairl`): main(), then exit."""
    from fairl.process import skip_exit_collection

    try:
        code = main()
    finally:
        skip_exit_collection()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ConfigError as error:
        if args.debug:
            raise
        print(f"fairl: configuration error:\n{error}", file=sys.stderr)
        return 2
    except StoreError as error:
        if args.debug:
            raise
        print(f"fairl: store error: {error}", file=sys.stderr)
        return 3
    except OSError as error:
        if args.debug or error.errno not in ENVIRONMENT_ERRORS:
            raise
        where = error.filename or "(a file of the stores)"
        name = errno.errorcode.get(error.errno, str(error.errno))
        print(f"fairl: {where}: {os.strerror(error.errno)} [{name}]\n"
              f"  {ENVIRONMENT_ERRORS[error.errno]}; then rerun the same command", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
