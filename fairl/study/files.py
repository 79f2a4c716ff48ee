"""Study files of either kind: which kind a file is, its mapping on a `--world`, validated.

A file with `sources:` is a re-RLHF study (fairl.study.rerlhf_spec: reward sources x seeds);
any other is an IRL study (fairl.study.spec: a search over FitConfig). Both run through
`fairl study run` (fairl.study.kinds says what the runner asks each kind). Light: nothing here
imports Optuna or MLflow, so a broken file is told before the runner loads (a re-RLHF file
imports torch to check its RLHFConfig).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fairl.config import load_yaml
from fairl.study import rerlhf_spec, spec
from fairl.study.worlds import SuiteWorld, rerlhf_on_world, study_on_world


def is_rerlhf(raw: Any) -> bool:
    """Whether a study file's mapping is a re-RLHF study (it names reward `sources`)."""
    return isinstance(raw, dict) and "sources" in raw


def on_world(path: str | Path, world: SuiteWorld | None) -> tuple[Any, list[str]]:
    """The file's mapping run on `world` (None: its own) and notes on what was adapted;
    StudySkipped when it cannot run there (fairl.study.worlds)."""
    if is_rerlhf(load_yaml(path)):
        return rerlhf_on_world(path, world), []
    return study_on_world(path, world)


def load_study_file(path: str | Path, raw: Any = None) -> spec.Study | rerlhf_spec.Study:
    """The validated study of either kind (ConfigError naming the file and field)."""
    raw = load_yaml(path) if raw is None else raw
    return (rerlhf_spec.load_study if is_rerlhf(raw) else spec.load_study)(path, raw)


def study_name(path: str | Path) -> str:
    """The Optuna study and MLflow experiment of a study file on its own world."""
    return load_study_file(path).name
