"""`fairl report`: rebuild every figure and table of the studies from MLflow into reports/.

Nothing is refitted: every number comes from what the study runs logged (metrics, params,
tags, artifacts). Each item (a table and/or a figure; one module in `analysis/`) reads one
study, i.e. the MLflow experiment named after `studies/<study>.yaml` (its `name:`, else
the file stem; on another world `<name>@<world id>`, fairl.study.worlds), through
`fairl.runs.read` (which runs: see there; runs of two world hashes are refused). REPORT.md
names every run id it used. The items themselves are passed in (`fairl.cli` hands over
`analysis.ITEMS`): this module never imports analysis/.

Missing data. An item whose study has no finished trial runs says which study to run
(`run: fairl study run studies/X.yaml`); `fairl report` exits 0 then, unless that item was
asked for by name (`--only X`), which exits 1. An item that fails to build is reported and
makes the exit code 1; the other items are still built.

Output (`--out`, default reports/ of the checkout, reports/<world id>/ on another world):
tables/<item>.{md,tex,csv}, figures/<item>.{png,pdf}, REPORT.md (every item with its captions
and provenance; rewritten only by a full build, not by `--only`). Tables, figures and REPORT.md are deterministic: the
same runs give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import io
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from fairl.config import ConfigError, load_yaml
from fairl.paths import project_root, redact
from fairl.runs.read import MissingStudy, MixedWorlds, StudyRuns, TrialRun, load_study_runs
from fairl.runs.store import resolve_tracking_uri
from fairl.runs.write import error_line
from fairl.study.worlds import StudySkipped, SuiteWorld, experiment_name, report_dir, study_on_world


def study_name(studies_dir: Path, stem: str) -> tuple[str, str]:
    """(study name, study file) for studies/<stem>.yaml: its `name:` if it has one."""
    path = studies_dir / f"{stem}.yaml"
    name = stem
    if path.is_file():
        try:
            name = load_yaml(path).get("name") or stem
        except ConfigError:
            pass  # the study file's own errors are for `fairl study run` to report
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = path
    return str(name), str(shown)


# --- items and sections ------------------------------------------------------------------------

@dataclasses.dataclass
class Options:
    """What every item may use: where to write, which run to inspect, how many failures."""

    out: Path
    uri: str
    studies_dir: Path
    run: str | None = None  # --run: the run for training curves and failure inspection
    top_k: int = 10
    world: SuiteWorld | None = None  # --world: the world whose runs are read (None: default)

    def experiment(self, stem: str) -> tuple[str, str]:
        """(MLflow experiment, study file) of studies/<stem>.yaml on this report's world; the
        file carries `--world SPEC` on another world, so every command a report names has it."""
        name, study_file = study_name(self.studies_dir, stem)
        if self.world is None or self.world.is_default:
            return name, study_file
        return experiment_name(name, self.world.id), f"{study_file} --world {self.world.spec}"

    def study(self, stem: str) -> StudyRuns:
        """The runs of studies/<stem>.yaml (MissingStudy if there are none, or if the study
        does not run on this world: fairl.study.worlds says why)."""
        name, study_file = self.experiment(stem)
        if self.world is not None and not self.world.is_default:
            try:
                study_on_world(self.studies_dir / f"{stem}.yaml", self.world)
            except StudySkipped as skipped:
                reason = str(skipped).partition(": ")[2]  # without the study's name
                raise MissingStudy(name, study_file, self.uri, "not run on this world",
                                   reason) from None
            except ConfigError:
                pass  # the study file's own errors are for `fairl study run` to report
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
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def write_report(out: Path, uri: str, results: dict[str, Section | MissingStudy | str],
                 world: SuiteWorld | None = None) -> Path:
    """REPORT.md: every built item with caption, provenance; missing ones with their command."""
    lines = ["# fairl report", "",
             ("Generated by `fairl report` from the MLflow runs of the studies in `studies/`; "
             "nothing was refitted. Regenerate with `fairl report` (or `make report`)."), "",
             f"Tracking store: `{redact(uri)}`", ""]
    if world is not None and not world.is_default:
        lines += [(f"World: `{world.id}`: every study's world block replaced by `--world "
                  f"{world.spec}`, experiments `<study>@{world.id}`; regenerate with `fairl "
                  f"report --world {world.spec}`."), ""]
    missing = {name: result for name, result in results.items()
               if isinstance(result, MissingStudy)}
    failed = {name: result for name, result in results.items() if isinstance(result, str)}
    if missing:
        lines += ["Not built yet (no finished runs of the study):", ""]
        commands: dict[str, list[str]] = {}
        for name, result in missing.items():
            commands.setdefault(result.command, []).append(name)
        lines += [f"* {', '.join(names)}: " + (f"run `{command}`" if command.startswith("fairl ")
                                                else markdown_text(command))
                  for command, names in commands.items()]
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


def build_report(items: Mapping[str, Callable[[Options], Section]], uri: str | None = None,
                 out: str | Path | None = None, only: list[str] | None = None,
                 studies_dir: str | Path | None = None, run: str | None = None,
                 top_k: int = 10, stream=None, world: SuiteWorld | None = None) -> int:
    """Build the asked items (default: all of `items`, name -> builder, in report order) into
    `out` (default: reports/ of the checkout, reports/<world id>/ for `world`); returns the
    exit code."""
    stream = stream or sys.stdout
    uri = resolve_tracking_uri(uri)
    out = Path(out) if out else report_dir(project_root() / "reports", world and world.id)
    studies_dir = studies_dir or project_root() / "studies"
    out.mkdir(parents=True, exist_ok=True)
    options = Options(out=out, uri=uri, studies_dir=Path(studies_dir), run=run, top_k=top_k,
                      world=world)
    load_study_runs.cache_clear()
    names = list(dict.fromkeys(only)) if only else list(items)
    results: dict[str, Section | MissingStudy | str] = {}
    code = 0
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[name] = items[name](options)
            files = ", ".join(str(path) for path in results[name].files)
            print(f"{name}: {files}", file=stream)
        except MissingStudy as missing:
            results[name] = missing
            for folder in ("tables", "figures"):  # nothing stale from an earlier build
                for path in (out / folder).glob(f"{name}.*"):
                    path.unlink()
            todo = (f"run: {missing.command}" if missing.command.startswith("fairl ")
                    else missing.command)
            print(f"{name}: missing ({missing}); {todo}", file=sys.stderr if only else stream)
            if only:
                code = 1
        except MixedWorlds as mixed:  # one line: the runs are fine, only their mix is refused
            results[name] = str(mixed)
            print(f"{name}: {mixed}", file=sys.stderr)
            code = 1
        except Exception as error:  # noqa: BLE001 (one broken item must not hide the others)
            results[name] = error_line(error)
            text = io.StringIO()
            traceback.print_exc(file=text)
            print(f"{name}: FAILED: {results[name]}\n{text.getvalue()}", file=sys.stderr)
            code = 1
    if not only:
        path = write_report(out, uri, results, world)
        print(f"report: {path}", file=stream)
    return code
