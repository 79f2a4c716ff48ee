"""`fairl report`: the analysis/ items rebuilt from the MLflow runs into reports/."""

from __future__ import annotations

import importlib

import analysis
from fairl.config import ConfigError
from fairl.study.worlds import parse_world


def report_items(names=analysis.ITEMS) -> dict:
    """name -> build(options) of analysis.<name>, in report order."""
    # Imported when a report is built: the items load matplotlib and seaborn (~2 s).
    return {name: importlib.import_module(f"analysis.{name}").build for name in names}


def build_report(uri: str | None = None, out=None, only: list[str] | None = None,
                 studies_dir=None, run: str | None = None, top_k: int = 10,
                 world=None) -> int:
    from fairl.report import build_report as build  # heavy: mlflow

    return build(report_items(), uri, out, only, studies_dir, run, top_k, world=world)


def cmd_report(args) -> int:
    unknown = [name for name in args.only or [] if name not in analysis.ITEMS]
    if unknown:
        raise ConfigError(f"--only: unknown item(s) {', '.join(unknown)}; "
                          f"items: {', '.join(analysis.ITEMS)}")
    if args.top_k < 1:
        raise ConfigError(f"--top-k: must be >= 1 (got {args.top_k})")
    world = parse_world(args.world) if args.world else None
    return build_report(args.tracking_uri, args.out, args.only, args.studies, args.run,
                        args.top_k, world)


def add_commands(commands) -> None:
    report = commands.add_parser(
        "report", help="rebuild every figure and table from the MLflow runs into reports/",
        description="Read the studies' runs from MLflow (never refit) and write tables "
                    "(Markdown, LaTeX, CSV), figures (PNG, PDF) and REPORT.md. Items whose "
                    "study has no runs yet name the study to run.")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: $FAIRL_TRACKING_URI, "
                                               "$MLFLOW_TRACKING_URI or sqlite mlruns/mlflow.db)")
    report.add_argument("--out", help="output folder (default: reports/ of the checkout, "
                                      "reports/<world id>/ with --world)")
    report.add_argument("--world", metavar="SPEC",
                        help="report the studies run on this world (as given to `fairl demo "
                             "--world` / `fairl study run --world`)")
    report.add_argument("--only", nargs="+", metavar="ITEM",
                        help=f"build only these items (REPORT.md is left as it is): "
                             f"{', '.join(analysis.ITEMS)}")
    report.add_argument("--studies", help="folder of the study files naming the experiments "
                                          "(default: studies/ of the checkout)")
    report.add_argument("--run", metavar="RUN_ID",
                        help="run for the training curves and failure inspection "
                             "(default: the FA-IRL max-margin run of main_table)")
    report.add_argument("--top-k", type=int, default=10,
                        help="failure pairs to inspect (default 10)")
    report.set_defaults(handler=cmd_report)
