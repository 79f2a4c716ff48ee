"""`fairl demo` (`make demo`), the main job: the paper's studies on the embedded world + report.

1. describe the embedded default world (base vs RLHF-detoxified SmolLM2 outputs);
2. run the paper's studies on it (each resumes: a second demo only rebuilds the report);
3. rebuild reports/ (tables, figures, REPORT.md) from the MLflow runs.
Embeddings are computed on first use and cached (.cache/embeddings).
"""

from __future__ import annotations

import time

from fairl.cli.report import build_report
from fairl.paths import DEFAULT_WORLD_DIR, project_root

DEMO_STUDIES = ("main_table", "ablation_no_rf", "ablation_fixed_lambda",
                "ablation_failure_source", "tnt_fraction", "fa_sweep",
                "identifiability", "regime_map",  # the SIR world (issue 15)
                "misspecification", "budget", "budget_sir")  # issue 25; the ledger reads all


def run_demo(studies: tuple[str, ...] = DEMO_STUDIES, tracking_uri: str | None = None,
             storage: str | None = None) -> int:
    from fairl.data.pairset import PairSet, world_summary  # heavy: torch scorers
    from fairl.study.runner import run_study  # heavy: optuna, torch

    started = time.perf_counter()
    print(world_summary(PairSet.load(DEFAULT_WORLD_DIR).card, DEFAULT_WORLD_DIR), flush=True)
    for name in studies:
        print(f"\n== study {name}: fairl study run studies/{name}.yaml", flush=True)
        run_study(project_root() / "studies" / f"{name}.yaml", storage=storage,
                  tracking_uri=tracking_uri)
    print("\n== report: fairl report", flush=True)
    code = build_report(tracking_uri)
    report = project_root() / "reports" / "REPORT.md"
    main_table = project_root() / "reports" / "tables" / "main_table.md"
    if main_table.is_file():  # the headline numbers: standard IRL vs FA-IRL on held-out pairs
        print("\n" + main_table.read_text(encoding="utf-8"))
    claims = project_root() / "reports" / "tables" / "claims.md"
    if claims.is_file():  # the verdict, claim by claim (the first section of REPORT.md)
        print("\n" + claims.read_text(encoding="utf-8"))
    print(f"\ndemo done in {(time.perf_counter() - started) / 60:.1f} min; open {report} "
          "and the MLflow UI (fairl ui)")
    return code


def cmd_demo(args) -> int:
    return run_demo(tuple(args.studies), tracking_uri=args.tracking_uri, storage=args.storage)


def add_commands(commands) -> None:
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
