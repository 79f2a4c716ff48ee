"""`fairl study run|list|status|repair`, `fairl ui` (MLflow), `fairl dashboard` (Optuna)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from fairl.config import ConfigError
from fairl.paths import redact
from fairl.process import interrupt_on_sigterm
from fairl.runs.store import resolve_tracking_uri
from fairl.runs.ui import serve_ui

STORAGE_HELP = ("Optuna storage: a journal file path or an RDB URL such as "
                "postgresql://user@host/db (default: $FAIRL_STORAGE or mlruns/optuna.journal)")


def cmd_study_run(args) -> int:
    # light: a broken IRL study file is told in well under 2 s (a re-RLHF one loads torch)
    from fairl.study.files import load_study_file, on_world
    from fairl.study.worlds import StudySkipped, parse_world

    world = parse_world(args.world) if args.world else None
    try:
        load_study_file(args.study_file, on_world(args.study_file, world)[0])
    except StudySkipped as skipped:
        print(skipped)
        return 0
    from fairl import outage  # light

    if args.store_timeout is not None:
        if not 0 < args.store_timeout < float("inf"):
            raise ConfigError(f"--store-timeout: seconds to wait for an unreachable store, a "
                              f"number > 0 (got {args.store_timeout:g})")
        outage.set_store_timeout(args.store_timeout)  # the workers inherit it
    outage.store_timeout()  # a bad FAIRL_STORE_TIMEOUT, before any heavy import
    from fairl.study.runner import run_study  # heavy: optuna, torch

    # SIGTERM (kill, systemd, a batch system) = Ctrl-C; both wait out a trial's bookkeeping
    with interrupt_on_sigterm(sigint=True) as signals:
        try:
            report = run_study(args.study_file, trials=args.trials, workers=args.workers,
                               storage=args.storage, tracking_uri=args.tracking_uri,
                               progress=not args.no_progress, batch=args.batch, world=world)
        except KeyboardInterrupt:
            print("interrupted: the running trial is re-queued; rerun the same command to "
                  "continue", file=sys.stderr)
            return 128 + (signals[0] if signals else signal.SIGINT)
    for message in report.messages:
        print(f"  {message}")
    counts = report.tally
    print(f"{report.study}: {counts.done}/{report.target} done ({counts.complete} complete, "
          f"{counts.failed} failed{_pruned(counts)}); launch run {report.launch_run} {report.status} in MLflow "
          f"experiment {report.experiment}")
    return 0 if report.status == "FINISHED" else 1


def _pruned(counts) -> str:
    return f", {counts.pruned} pruned" if counts.pruned else ""


def cmd_study_list(args) -> int:
    from fairl.study.status import list_studies  # heavy: optuna

    print(list_studies(args.storage))
    return 0


def cmd_study_status(args) -> int:
    from fairl.study.status import study_status  # heavy: optuna

    print(study_status(args.study, args.storage))
    return 0


def cmd_study_repair(args) -> int:
    from fairl.study.repair import repair_study  # heavy: optuna, mlflow

    for line in repair_study(args.study, args.storage, args.tracking_uri):
        print(line)
    return 0


def cmd_study_best(args) -> int:
    from fairl.study.status import best_trial_run  # heavy: optuna, mlflow

    best = best_trial_run(args.study, args.storage)
    uri = resolve_tracking_uri(args.tracking_uri)
    if best["cell"] is not None:  # a re-RLHF study: the least toxic policy, no reward model
        if args.register:
            raise ConfigError(f"--register: study {best['study']!r} is a re-RLHF grid, whose "
                              "trials are policies, not reward models; register the best "
                              "trial of an IRL study")
        source, seed = best["cell"]
        print(f"{best['study']}: best trial {best['number']} {best['values']} (source {source}, "
              f"seed {seed}) run {best['run_id']}")
        print(f"  policy run: runs:/{best['run_id']} (samples.csv, curves.csv, config.yaml; "
              "reward.npz where the source is an IRL reward)")
        return 0
    print(f"{best['study']}: best trial {best['number']} {best['values']} run {best['run_id']}")
    model_uri = f"runs:/{best['run_id']}/reward"
    print(f"  reward model: {model_uri}")
    if args.register:
        from fairl.models import register_reward  # heavy: mlflow

        name = args.name or best["study"]
        version = register_reward(uri, best["run_id"], name, args.alias)
        where = f"models:/{name}@{args.alias}" if args.alias else f"models:/{name}/{version}"
        print(f"  registered {name} version {version}: {where}")
    return 0


def cmd_ui(args) -> int:
    return serve_ui(resolve_tracking_uri(args.tracking_uri), args.host, args.port)


def cmd_dashboard(args) -> int:
    from optuna_dashboard import run_server  # heavy: optuna, bottle

    from fairl.study.storage import is_rdb, open_storage, resolve_storage  # heavy: optuna

    storage = resolve_storage(args.storage)
    if not is_rdb(storage) and not Path(storage).exists():
        raise ConfigError(f"--storage {storage}: no study storage yet (run a study first)")
    print(f"optuna-dashboard for {redact(storage)} on http://{args.host}:{args.port} "
          "(Ctrl-C to stop)", flush=True)
    # SIGTERM as Ctrl-C: the server's socket closes on the way out, like on SIGINT.
    with interrupt_on_sigterm():
        try:
            run_server(open_storage(storage), host=args.host, port=args.port)
        except KeyboardInterrupt:
            pass
    return 0


def add_run_options(run) -> None:
    """The options of `fairl study run` that `fairl rerlhf run` (its alias) takes too."""
    run.add_argument("--trials", type=int, help="trial count (default: the file's `trials`; "
                                                "a re-RLHF study: the whole grid)")
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--storage", help=STORAGE_HELP)
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $FAIRL_TRACKING_URI, "
                                            "$MLFLOW_TRACKING_URI or sqlite mlruns/mlflow.db)")
    run.add_argument("--store-timeout", type=float, metavar="SECONDS",
                     help="how long a trial waits for an unreachable tracking server or "
                          "database before the launch stops and re-queues it (default: "
                          "$FAIRL_STORE_TIMEOUT or 600)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--world", metavar="SPEC",
                     help="run the study on this world instead of its own: sir:beta=0.5, "
                          "pairset:path=worlds/mine,encoder=minilm or a YAML world block; "
                          "MLflow experiment and Optuna study <name>@<world id>")


def add_commands(commands) -> None:
    """`fairl study run|list|status|repair|best`, `fairl ui`, `fairl dashboard`."""
    # Over 60 lines: one argparse declaration per subcommand, flat, as `fairl --help` lists them.
    study = commands.add_parser(
        "study", help="run and inspect Optuna studies (studies/*.yaml)",
        description="Studies are YAML files naming a world, a base FitConfig, variants, a search "
                    "space, sampler, trials, seeds and objective metrics; every trial is one "
                    "MLflow run. A re-RLHF study (studies/rerlhf/*.yaml: reward sources x "
                    "seeds) runs the same way, one trial per (source, seed) cell.")
    study_commands = study.add_subparsers(dest="study_command", metavar="COMMAND", required=True)

    run = study_commands.add_parser(
        "run", help="run a study to its trial count (resumes; reaps killed trials)",
        description="Run (or continue) a study until it has its trial count of finished trials. "
                    "Rerunning continues; trials of killed workers are failed and re-queued.")
    run.add_argument("study_file", metavar="STUDY.yaml")
    add_run_options(run)
    run.add_argument("--batch", type=int, help="trials asked at once and fitted in one pass, "
                                               "all their seeds (default: the study's `batch`)")
    run.set_defaults(handler=cmd_study_run)

    listing = study_commands.add_parser("list", help="studies in the storage, with counts")
    listing.add_argument("--storage", help=STORAGE_HELP)
    listing.set_defaults(handler=cmd_study_list)

    status = study_commands.add_parser("status", help="done, running, failed and best trials")
    status.add_argument("study", metavar="NAME|STUDY.yaml")
    status.add_argument("--storage", help=STORAGE_HELP)
    status.set_defaults(handler=cmd_study_status)

    repair = study_commands.add_parser(
        "repair", help="repair a journal with a torn record; re-queue trials of dead workers",
        description="Back up the journal, remove its torn or unreadable records (a write cut "
                    "short by a full disk or a crash), fail and re-queue trials whose worker is "
                    "gone (their MLflow runs KILLED), and say what was done.")
    repair.add_argument("study", metavar="NAME|STUDY.yaml")
    repair.add_argument("--storage", help=STORAGE_HELP)
    repair.add_argument("--tracking-uri", help="MLflow tracking URI of the study's runs")
    repair.set_defaults(handler=cmd_study_repair)

    best = study_commands.add_parser(
        "best", help="the best trial and its reward model; --register puts it in the registry")
    best.add_argument("study", metavar="NAME|STUDY.yaml")
    best.add_argument("--storage", help=STORAGE_HELP)
    best.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    best.add_argument("--register", action="store_true",
                      help="register the best trial's reward model in the Model Registry")
    best.add_argument("--name", help="registered model name (default: the study's name)")
    best.add_argument("--alias", help="alias for the new version, e.g. champion")
    best.set_defaults(handler=cmd_study_best)

    ui = commands.add_parser("ui", help="the MLflow UI on the tracking store",
                             description="Serve the MLflow UI (default store mlruns/mlflow.db).")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: the default store)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=cmd_ui)

    dashboard = commands.add_parser("dashboard", help="optuna-dashboard on the study storage")
    dashboard.add_argument("--storage", help=STORAGE_HELP)
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.set_defaults(handler=cmd_dashboard)
