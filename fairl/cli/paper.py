"""`fairl paper` (`make paper`): the paper's setting end to end, in one command.

1. check configs/world_paper.yaml (offline without its hub inputs: one error naming them);
2. build its world into worlds/<name>/ unless a build of that same config is there (every
   stage resumes: a killed build reruns from its last checkpoint or chunk);
3. run the suite on it, `world {name: pairset, options: {path, encoder: base-meanpool,
   device}}` (h(o) = the base LM's mean-pooled last hidden state), written as the SPEC file
   <folder>/world.yaml (id: the config's name): the demo's studies and re-RLHF, in
   experiments `<study>@<name>`;
4. write reports/<name>/REPORT.md (reports/paper/ for the paper's config).
`fairl world build --plan --config configs/world_paper.yaml` shows what step 2 will take.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import yaml

from fairl.cli.demo import DEMO_STUDIES, run_demo
from fairl.cli.world import record_world_build
from fairl.config import ConfigError
from fairl.paths import project_root

PAPER_CONFIG = "configs/world_paper.yaml"
PAPER_STUDIES = (*DEMO_STUDIES, "rerlhf/rerlhf")
IGNORED = ("device", "dtype", "stage_seconds")  # where and how long, not what was built


def built_from(folder: Path, config) -> bool:
    """Whether `folder` holds a world built from `config` (False: none; ConfigError: another)."""
    card_path = folder / "card.json"
    if not card_path.is_file():
        return False
    built = {key: value for key, value in json.loads(card_path.read_text())
             .get("build_config", {}).items() if key not in IGNORED}
    wanted = {key: value for key, value in dataclasses.asdict(config).items()
              if key not in IGNORED}
    if built != wanted:
        differ = sorted(key for key in wanted.keys() | built.keys()
                        if built.get(key) != wanted.get(key))
        raise ConfigError(f"{folder}: holds a world built from another config (fields "
                          f"{', '.join(differ)} differ); delete it or give --world-dir")
    return True


def cmd_paper(args: argparse.Namespace) -> int:
    from fairl.data.build_config import default_out, load_build_config  # light
    from fairl.study.worlds import parse_world

    config = load_build_config(args.config, sets=args.set or ())
    folder = Path(args.world_dir or default_out(config.name))
    if built_from(folder, config):
        print(f"world {config.name}: built at {folder}, reused", flush=True)
    else:
        from fairl.data.build import build_world  # heavy: LMs, torch

        pairset = build_world(config, folder)
        print(f"MLflow: experiment world_build, run "
              f"{record_world_build(pairset, args.tracking_uri)}", flush=True)
    # The suite's world as a SPEC file: `--world <folder>/world.yaml` names it to every other
    # command (fairl report, study run, rerlhf run), in the same experiments <study>@<name>.
    spec = folder / "world.yaml"
    spec.write_text(yaml.safe_dump({"id": config.name, "name": "pairset", "options": {
        "path": str(folder), "encoder": "base-meanpool", "device": config.device}},
        sort_keys=False))
    world = parse_world(str(spec))
    print(f"suite world {world.id}: --world {spec}", flush=True)
    out = args.out or project_root() / "reports" / world.id
    return run_demo(tuple(args.studies), tracking_uri=args.tracking_uri, storage=args.storage,
                    world=world, out=out, trials=args.trials)


def add_commands(commands) -> None:
    paper = commands.add_parser(
        "paper", help="the paper's setting: build its world (pythia + RTP + RoBERTa), run the "
                      "suite on it, report into reports/paper/",
        description="Build configs/world_paper.yaml's world if it is not built yet (GPU and hub "
                    "inputs: see `fairl world build --plan --config configs/world_paper.yaml`), "
                    "run the demo's studies and re-RLHF on it (world pairset, base-meanpool "
                    "encoder) and write reports/<world name>/REPORT.md.")
    paper.add_argument("--config", default=PAPER_CONFIG, metavar="FILE.yaml",
                       help=f"world build config (default: {PAPER_CONFIG})")
    paper.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a build config field (repeatable; dots for nesting)")
    paper.add_argument("--world-dir", help="the world's folder (default: worlds/<name>)")
    paper.add_argument("--studies", nargs="+", default=list(PAPER_STUDIES), metavar="NAME",
                       help=f"studies/<NAME>.yaml to run (default: {' '.join(PAPER_STUDIES)})")
    paper.add_argument("--trials", type=int, metavar="N", help="at most N trials per study")
    paper.add_argument("--out", help="report folder (default: reports/<world name>/)")
    paper.add_argument("--tracking-uri", help="MLflow store (default: mlruns/mlflow.db)")
    paper.add_argument("--storage", help="Optuna storage (default: mlruns/optuna.journal)")
    paper.set_defaults(handler=cmd_paper)
