"""`fairl score`: rewards R, R_D, R_F of texts under a logged reward model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairl.config import ConfigError
from fairl.runs.store import resolve_tracking_uri


def read_texts(args: argparse.Namespace) -> list[str]:
    """The texts to score: the arguments, or one per line of --file (`-`: stdin)."""
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        texts = [line for line in text.splitlines() if line.strip()]
    else:
        texts = list(args.texts)
    if not texts:
        raise ConfigError("fairl score: no texts (give TEXT arguments or --file)")
    return texts


def cmd_score(args: argparse.Namespace) -> int:
    texts = read_texts(args)
    from fairl.models import score  # heavy: mlflow, torch

    try:
        out = score(args.model, texts, resolve_tracking_uri(args.tracking_uri), args.seed)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"--model {args.model}: {error}") from None
    print("R\tR_D\tR_F\ttext")
    for text, row in zip(texts, out.itertuples(index=False)):
        print(f"{row.R:.6f}\t{row.R_D:.6f}\t{row.R_F:.6f}\t{text}")
    return 0


def add_commands(commands) -> None:
    score = commands.add_parser(
        "score", help="score texts with a logged reward model",
        description="Print R = R_D + R_F, R_D and R_F of each text under the reward model of a "
                    "study trial (runs:/<run id>/reward) or a registered one "
                    "(models:/<name>@<alias>, see `fairl study best --register`).")
    score.add_argument("--model", required=True, metavar="URI",
                       help="runs:/<run id>/reward, models:/<name>@<alias> or models:/m-<id>")
    score.add_argument("texts", nargs="*", metavar="TEXT")
    score.add_argument("--file", metavar="F", help="texts, one per line (- for stdin)")
    score.add_argument("--seed", type=int, help="the fit seed to score with (default: best)")
    score.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    score.set_defaults(handler=cmd_score)
