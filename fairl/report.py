"""`fairl report`: rebuild every figure and table of the studies from MLflow into reports/.

Nothing is refitted: every number comes from what the study runs logged (metrics, params,
tags, artifacts). Each item (a table and/or a figure; one module in `analysis/`) reads one
study, i.e. the MLflow experiment named after `studies/<study>.yaml` (its `name:`, else
the file stem). This module is the one place that reads MLflow.

Which runs. In that experiment, the latest launch (parent run, tag kind=launch) with at least
one FINISHED trial names the Optuna study it ran (tags optuna_study + optuna_storage). Every
FINISHED trial run of that Optuna study is used, from whichever launch ran it (a study
resumed over several launches is whole), sorted by trial number; runs of other Optuna studies
logged to the same experiment (an older definition of the study, another storage, another
world) are left out. REPORT.md names every run id it used.

Missing data. An item whose study has no finished trial runs says which study to run
(`run: fairl study run studies/X.yaml`); `fairl report` exits 0 then, unless that item was
asked for by name (`--only X`), which exits 1. An item that fails to build is reported and
makes the exit code 1; the other items are still built.

Output (`--out`, default reports/ of the checkout): tables/<item>.{md,tex,csv},
figures/<item>.{png,pdf}, REPORT.md (every item with its captions and provenance; rewritten
only by a full build, not by `--only`). Tables, figures and REPORT.md are deterministic: the
same runs give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import sys
import traceback
from pathlib import Path
from typing import Any

from fairl import tracking

# Items in report order: module analysis.<item> defines STUDY, TITLE and build().
ITEMS = ("main_table", "training_curves", "reward_distributions", "failures", "tnt_fraction",
         "ablation_no_rf", "ablation_fixed_lambda", "ablation_failure_source", "sweep_heatmap",
         "importances", "rerlhf")


# --- runs ------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrialRun:
    """One finished trial run: a configuration fitted on every seed of its study."""

    run_id: str
    name: str
    trial: int  # Optuna trial number; -1 for a run outside Optuna (a re-RLHF cell)
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str
    experiment_id: str

    @property
    def method(self) -> str:
        """standard_irl, fa_irl, or the ablation the configuration is (FitConfig.method)."""
        return self.tags.get("method", "")

    @property
    def variant(self) -> str | None:
        value = self.params.get("variant", "null")
        return None if value in ("null", "None") else value

    @property
    def objective(self) -> str:
        return self.params.get("fit.objective", "")

    @property
    def seeds(self) -> list[int]:
        return [int(seed) for seed in self.tags.get("seed", "").split(",") if seed != ""]

    def param(self, key: str) -> Any:
        """A parameter as logged (JSON: numbers, booleans, null), or its raw string."""
        import json

        text = self.params[key]
        try:
            return json.loads(text)
        except ValueError:
            return text

    def seed_values(self, metric: str) -> dict[int, float]:
        """{seed: value} of `metric` (e.g. test_f1) from the per-seed metrics seed_<s>/..."""
        return {seed: self.metrics[f"seed_{seed}/{metric}"] for seed in self.seeds
                if f"seed_{seed}/{metric}" in self.metrics}


@dataclasses.dataclass
class StudyRuns:
    """The finished trial runs of one study, and where they came from."""

    study: str  # study name = MLflow experiment name
    study_file: str  # e.g. studies/main_table.yaml (for messages)
    uri: str
    experiment_id: str
    launches: list[str]  # launch (parent) run ids the runs belong to
    runs: list[TrialRun]
    spec: dict[str, Any]  # the study file as the latest launch logged it (study.yaml)

    def artifact(self, run: TrialRun, path: str) -> Path:
        """Local path of artifact `path` of `run` (downloaded once if the store is remote)."""
        return artifact_path(self.uri, run.run_id, run.artifact_uri, path)

    def by_method_objective(self) -> dict[tuple[str, str], TrialRun]:
        """(method, objective) -> the latest run (highest trial number) of that configuration."""
        cells: dict[tuple[str, str], TrialRun] = {}
        for run in self.runs:  # sorted by trial number: later trials win
            cells[(run.method, run.objective)] = run
        return cells


class MissingStudy(Exception):
    """A study an item needs has no finished runs in the tracking store."""

    def __init__(self, study: str, study_file: str, uri: str, detail: str,
                 hint: str | None = None):
        self.study, self.study_file, self.uri, self.hint = study, study_file, uri, hint
        super().__init__(detail)

    @property
    def command(self) -> str:
        """What to run: `fairl study run studies/X.yaml` (or the hint, when rerunning is not it)."""
        if self.hint:
            return self.hint
        flag = "" if self.uri == tracking.default_tracking_uri() else f" --tracking-uri {self.uri}"
        return f"fairl study run {self.study_file}{flag}"


def study_name(studies_dir: Path, stem: str) -> tuple[str, str]:
    """(study name, study file) for studies/<stem>.yaml: its `name:` if it has one."""
    import yaml

    path = studies_dir / f"{stem}.yaml"
    name = stem
    if path.is_file():
        try:
            name = (yaml.safe_load(path.read_text()) or {}).get("name") or stem
        except (yaml.YAMLError, AttributeError):
            pass
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = path
    return str(name), str(shown)


def _trial_run(run) -> TrialRun:
    return TrialRun(run_id=run.info.run_id, name=run.info.run_name or "",
                    trial=int(run.data.tags.get("trial_number", -1)),
                    start_time=int(run.info.start_time or 0), params=dict(run.data.params),
                    metrics=dict(run.data.metrics), tags=dict(run.data.tags),
                    artifact_uri=run.info.artifact_uri, experiment_id=run.info.experiment_id)


def _search(uri: str, experiment_id: str, filter_string: str) -> list:
    client = tracking.client(uri)
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000,
                                  page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


@functools.cache
def load_study_runs(uri: str, name: str, study_file: str) -> StudyRuns:
    """The finished trial runs of study `name` (see the module docstring); MissingStudy if none."""
    import yaml

    client = tracking.client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise MissingStudy(name, study_file, uri, f"no MLflow experiment {name!r}")
    finished = [_trial_run(run) for run in _search(
        uri, experiment.experiment_id, "tags.kind = 'trial' and attributes.status = 'FINISHED'")]
    if not finished:
        raise MissingStudy(name, study_file, uri,
                           f"MLflow experiment {name!r} has no finished trial runs")
    parents = {run.tags.get("mlflow.parentRunId") for run in finished}
    launches = sorted((_trial_run(run) for run in _search(
        uri, experiment.experiment_id, "tags.kind = 'launch'") if run.info.run_id in parents),
        key=lambda launch: (launch.start_time, launch.run_id))
    spec: dict[str, Any] = {}
    if launches:
        latest = launches[-1]
        key = (latest.tags.get("optuna_study"), latest.tags.get("optuna_storage"))
        finished = [run for run in finished
                    if (run.tags.get("optuna_study"), run.tags.get("optuna_storage")) == key]
        try:
            spec = yaml.safe_load(artifact_path(uri, latest.run_id, latest.artifact_uri,
                                                "study.yaml").read_text()) or {}
        except Exception:  # noqa: BLE001 (a launch without a readable study.yaml: no spec)
            spec = {}
    used = {run.tags.get("mlflow.parentRunId") for run in finished}
    finished.sort(key=lambda run: (run.trial, run.start_time, run.run_id))
    return StudyRuns(study=name, study_file=study_file, uri=uri,
                     experiment_id=experiment.experiment_id,
                     launches=[launch.run_id for launch in launches if launch.run_id in used],
                     runs=finished, spec=spec)


def load_run(uri: str, run_id: str) -> StudyRuns:
    """One run by id (any experiment), as a StudyRuns holding just that run."""
    from mlflow.exceptions import MlflowException

    from fairl.config import ConfigError

    client = tracking.client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--run {run_id}: no such run in {tracking_label(uri)}") from None
    experiment = client.get_experiment(run.info.experiment_id)
    trial = _trial_run(run)
    return StudyRuns(study=experiment.name, study_file=f"studies/{experiment.name}.yaml", uri=uri,
                     experiment_id=experiment.experiment_id,
                     launches=[trial.tags.get("mlflow.parentRunId", "")], runs=[trial], spec={})


def artifact_path(uri: str, run_id: str, artifact_uri: str, path: str) -> Path:
    """A run's artifact as a local file: read in place from a local store, else downloaded."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file") and not parsed.netloc:
        local = Path(unquote(parsed.path), path)
        if not local.exists():
            raise FileNotFoundError(f"run {run_id} has no artifact {path}")
        return local
    return Path(tracking.client(uri).download_artifacts(run_id, path, str(_download_dir())))


@functools.cache
def _download_dir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="fairl-report-"))


def tracking_label(uri: str) -> str:
    """The tracking URI without a password."""
    import re

    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", uri)


# --- items and sections ------------------------------------------------------------------------

@dataclasses.dataclass
class Options:
    """What every item may use: where to write, which run to inspect, how many failures."""

    out: Path
    uri: str
    studies_dir: Path
    run: str | None = None  # --run: the run for training curves and failure inspection
    top_k: int = 10

    def study(self, stem: str) -> StudyRuns:
        """The runs of studies/<stem>.yaml (MissingStudy if there are none)."""
        name, study_file = study_name(self.studies_dir, stem)
        return load_study_runs(self.uri, name, study_file)


@dataclasses.dataclass
class Section:
    """What one item produced: its figures and tables for REPORT.md, files, the runs it used."""

    title: str
    figures: list[tuple[Path, str]]  # (PNG, one-line caption)
    tables: list[tuple[str, str]]  # (Markdown table, one-line caption)
    files: list[Path]  # every file written
    runs: list[tuple[TrialRun, str]]  # (run, what it is in this item)
    sources: list[StudyRuns]
    notes: str = ""  # Markdown shown after the figures and tables


def build_item(name: str, options: Options) -> Section:
    module = importlib.import_module(f"analysis.{name}")
    return module.build(options)


def provenance(section: Section, out: Path) -> str:
    """Study, experiment, launches, run ids, git commits and dataset hashes behind a section."""
    lines = []
    for source in section.sources:
        lines.append(f"* Study `{source.study}` ({source.study_file}); MLflow experiment "
                     f"`{source.study}` (id {source.experiment_id}); launch run(s) "
                     + (", ".join(f"`{launch}`" for launch in source.launches) or "none"))
    runs = [run for run, _ in section.runs]
    commits = sorted({(run.tags.get("git_commit", "unknown"), run.tags.get("git_dirty", "?"))
                      for run in runs})
    lines.append("* Git commit(s) of the runs: " + ", ".join(
        f"`{commit[:12]}`" + (" (uncommitted changes)" if dirty == "true" else "")
        for commit, dirty in commits))
    hashes = sorted({(run.tags.get("world", "?"), run.tags.get("dataset_hash", "?"))
                     for run in runs})
    lines.append("* World / dataset hash: " + ", ".join(f"{world} `{digest}`"
                                                       for world, digest in hashes))
    files = ", ".join(f"[{path.relative_to(out)}]({path.relative_to(out)})"
                      for path in section.files)
    lines.append(f"* Files: {files}")
    run_lines = [f"  * `{run.run_id}`" + (f" trial {run.trial}" if run.trial >= 0 else "")
                 + f": {label}" for run, label in section.runs]
    if len(run_lines) <= 8:
        lines.append("* Runs:")
        lines += run_lines
    else:
        lines += [f"* Runs ({len(run_lines)}):", "", "  <details><summary>run ids</summary>", ""]
        lines += run_lines
        lines += ["", "  </details>"]
    return "\n".join(lines)


def markdown_text(text: str) -> str:
    """Plain text safe inside Markdown emphasis (r* must not close an *italic*)."""
    return text.replace("\\", "\\\\").replace("*", "\\*")


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    import re

    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def write_report(out: Path, uri: str, results: dict[str, Section | MissingStudy | str]) -> Path:
    """REPORT.md: every built item with caption, provenance; missing ones with their command."""
    lines = ["# fairl report", "",
             ("Generated by `fairl report` from the MLflow runs of the studies in `studies/`; "
             "nothing was refitted. Regenerate with `fairl report` (or `make report`)."), "",
             f"Tracking store: `{tracking_label(uri)}`", ""]
    missing = {name: result for name, result in results.items()
               if isinstance(result, MissingStudy)}
    failed = {name: result for name, result in results.items() if isinstance(result, str)}
    if missing:
        lines += ["Not built yet (no finished runs of the study):", ""]
        commands: dict[str, list[str]] = {}
        for name, result in missing.items():
            commands.setdefault(result.command, []).append(name)
        lines += [f"* {', '.join(names)}: run `{command}`" for command, names in commands.items()]
        lines.append("")
    if failed:
        lines += ["Failed to build (see the `fairl report` output):", ""]
        lines += [f"* {name}: {reason}" for name, reason in failed.items()]
        lines.append("")
    built = {name: result for name, result in results.items() if isinstance(result, Section)}
    if built:
        lines += ["Contents: " + " · ".join(f"[{section.title}](#{anchor(section.title)})"
                                             for section in built.values()), ""]
    figure = table = 0
    for section in built.values():
        lines += [f"## {section.title}", ""]
        for path, caption in section.figures:
            figure += 1
            lines += [f"![Figure {figure}]({path.relative_to(out)})", "",
                      f"*Figure {figure}. {markdown_text(caption)}*", ""]
        for markdown, caption in section.tables:
            table += 1
            lines += [f"*Table {table}. {markdown_text(caption)}*", "", markdown, ""]
        if section.notes:
            lines += [section.notes, ""]
        lines += [provenance(section, out), ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def build_report(uri: str | None = None, out: str | Path | None = None,
                 only: list[str] | None = None, studies_dir: str | Path | None = None,
                 run: str | None = None, top_k: int = 10, stream=None) -> int:
    """Build the asked items (default: all) into `out` (default: reports/ of the checkout);
    returns the exit code."""
    import warnings

    from fairl.paths import project_root

    stream = stream or sys.stdout
    uri = tracking.resolve_tracking_uri(uri)
    out = Path(out) if out else project_root() / "reports"
    studies_dir = studies_dir or project_root() / "studies"
    out.mkdir(parents=True, exist_ok=True)
    options = Options(out=out, uri=uri, studies_dir=Path(studies_dir), run=run, top_k=top_k)
    load_study_runs.cache_clear()
    names = list(dict.fromkeys(only)) if only else list(ITEMS)
    results: dict[str, Section | MissingStudy | str] = {}
    code = 0
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[name] = build_item(name, options)
            files = ", ".join(str(path) for path in results[name].files)
            print(f"{name}: {files}", file=stream)
        except MissingStudy as missing:
            results[name] = missing
            for folder in ("tables", "figures"):  # nothing stale from an earlier build
                for path in (out / folder).glob(f"{name}.*"):
                    path.unlink()
            print(f"{name}: missing ({missing}); run: {missing.command}",
                  file=sys.stderr if only else stream)
            if only:
                code = 1
        except Exception as error:  # noqa: BLE001 (one broken item must not hide the others)
            results[name] = tracking.error_line(error)
            text = io.StringIO()
            traceback.print_exc(file=text)
            print(f"{name}: FAILED: {results[name]}\n{text.getvalue()}", file=sys.stderr)
            code = 1
    if not only:
        path = write_report(out, uri, results)
        print(f"report: {path}", file=stream)
    return code


# --- command line ------------------------------------------------------------------------------

def cmd_report(args) -> int:
    from fairl.config import ConfigError

    unknown = [name for name in args.only or [] if name not in ITEMS]
    if unknown:
        raise ConfigError(f"--only: unknown item(s) {', '.join(unknown)}; "
                          f"items: {', '.join(ITEMS)}")
    if args.top_k < 1:
        raise ConfigError(f"--top-k: must be >= 1 (got {args.top_k})")
    return build_report(args.tracking_uri, args.out, args.only, args.studies, args.run,
                        args.top_k)


def add_report_commands(commands) -> None:
    """`fairl report`."""
    report = commands.add_parser(
        "report", help="rebuild every figure and table from the MLflow runs into reports/",
        description="Read the studies' runs from MLflow (never refit) and write tables "
                    "(Markdown, LaTeX, CSV), figures (PNG, PDF) and REPORT.md. Items whose "
                    "study has no runs yet name the study to run.")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: $FAIRL_TRACKING_URI, "
                                               "$MLFLOW_TRACKING_URI or sqlite mlruns/mlflow.db)")
    report.add_argument("--out", help="output folder (default: reports/ of the checkout)")
    report.add_argument("--only", nargs="+", metavar="ITEM",
                        help=f"build only these items (REPORT.md is left as it is): "
                             f"{', '.join(ITEMS)}")
    report.add_argument("--studies", help="folder of the study files naming the experiments "
                                          "(default: studies/ of the checkout)")
    report.add_argument("--run", metavar="RUN_ID",
                        help="run for the training curves and failure inspection "
                             "(default: the FA-IRL max-margin run of main_table)")
    report.add_argument("--top-k", type=int, default=10,
                        help="failure pairs to inspect (default 10)")
    report.set_defaults(handler=cmd_report)


def script_main(item: str) -> int:
    """`python analysis/<item>.py [fairl report options]`: build that one item."""
    from fairl.cli import main

    return main(["report", "--only", item, *sys.argv[1:]])
