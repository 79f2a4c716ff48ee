"""`fairl demo` (`make demo`), the main job: the paper's studies on the embedded world + report.

1. describe the embedded default world (base vs RLHF-detoxified SmolLM2 outputs);
2. run the paper's studies on it (each resumes: a second demo only rebuilds the report);
3. rebuild reports/ (tables, figures, REPORT.md) from the MLflow runs.
Embeddings are computed on first use and cached (.cache/embeddings). `--world SPEC` runs the
same studies on another world (fairl.study.worlds: experiments `<study>@<world id>`, report in
reports/<world id>/); a study that cannot run there is skipped with one line saying why.
"""

from __future__ import annotations

import time
from pathlib import Path

from fairl.cli.report import build_report
from fairl.paths import DEFAULT_WORLD_DIR, project_root
from fairl.study.worlds import StudySkipped, SuiteWorld, pairset_dir, parse_world, report_dir

WORLD_HELP = ("run every study on this world instead of its own: a registered world with "
              "options (sir:beta=0.5, pairset:path=worlds/mine,encoder=minilm) or a YAML file "
              "holding a world block {name, options[, id]}")
DEMO_STUDIES = ("main_table", "ablation_no_rf", "ablation_fixed_lambda",
                "ablation_failure_source", "tnt_fraction", "fa_sweep",
                "identifiability", "regime_map",  # the SIR world (issue 15)
                "misspecification", "budget", "budget_sir")  # issue 25; the ledger reads all


def run_demo(studies: tuple[str, ...] = DEMO_STUDIES, tracking_uri: str | None = None,
             storage: str | None = None, world: SuiteWorld | None = None,
             out: str | None = None, trials: int | None = None) -> int:
    """The studies on `world` (None: each study's own), then the report into `out`."""
    from fairl.data.card import world_summary
    from fairl.data.pairset import PairSet  # heavy: torch scorers
    from fairl.study.files import load_study_file, on_world
    from fairl.study.runner import run_study  # heavy: optuna, torch

    started = time.perf_counter()
    folder = DEFAULT_WORLD_DIR if world is None else pairset_dir(world.block)
    if world is not None:
        print(f"world {world.id}: {world.block}", flush=True)
    if folder is not None:
        print(world_summary(PairSet.load(folder).card, folder), flush=True)
    flag = "" if world is None else f" --world {world.spec}"
    for name in studies:
        path = project_root() / "studies" / f"{name}.yaml"
        print(f"\n== study {name}: fairl study run studies/{name}.yaml{flag}", flush=True)
        try:
            count = None if trials is None else min(trials, load_study_file(
                path, on_world(path, world)[0]).trials)
            report = run_study(path, trials=count, storage=storage, tracking_uri=tracking_uri,
                               world=world)
        except StudySkipped as skipped:
            print(skipped, flush=True)
            continue
        for message in report.messages:
            print(f"  {message}")
    print(f"\n== report: fairl report{flag}", flush=True)
    out = Path(out) if out else report_dir(project_root() / "reports", world and world.id)
    code = build_report(tracking_uri, out=out, world=world)
    report = out / "REPORT.md"
    main_table = out / "tables" / "main_table.md"
    if main_table.is_file():  # the headline numbers: standard IRL vs FA-IRL on held-out pairs
        print("\n" + main_table.read_text(encoding="utf-8"))
    claims = project_root() / "reports" / "tables" / "claims.md"
    if claims.is_file():  # the verdict, claim by claim (the first section of REPORT.md)
        print("\n" + claims.read_text(encoding="utf-8"))
    print(f"\ndemo done in {(time.perf_counter() - started) / 60:.1f} min; open {report} "
          "and the MLflow UI (fairl ui)")
    return code


def cmd_demo(args) -> int:
    world = parse_world(args.world) if args.world else None  # one line naming the field
    return run_demo(tuple(args.studies), tracking_uri=args.tracking_uri, storage=args.storage,
                    world=world, out=args.out, trials=args.trials)


def add_commands(commands) -> None:
    demo = commands.add_parser(
        "demo", help="the main job: the paper's studies on the embedded default world + report",
        description="Describe the embedded default world (base vs RLHF-detoxified SmolLM2 "
                    "outputs), run the paper's studies on it (standard IRL vs FA-IRL, ablations, "
                    "T→NT fraction, FA-IRL sweep; each resumes), and rebuild reports/REPORT.md.")
    demo.add_argument("--studies", nargs="+", default=list(DEMO_STUDIES), metavar="NAME",
                      help=f"studies/<NAME>.yaml to run (default: {' '.join(DEMO_STUDIES)}; "
                           "rerlhf/rerlhf: the re-RLHF study)")
    demo.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    demo.add_argument("--storage", help="Optuna storage (default: mlruns/optuna.journal)")
    demo.add_argument("--world", metavar="SPEC", help=WORLD_HELP)
    demo.add_argument("--out", help="report folder (default: reports/, or reports/<world id>/)")
    demo.add_argument("--trials", type=int, metavar="N",
                      help="at most N trials per study (a first look; grids run N of their cells)")
    demo.set_defaults(handler=cmd_demo)
