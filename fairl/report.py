"""`fairl report`: rebuild every figure and table of the studies from MLflow into reports/.

Nothing is refitted: every number comes from what the study runs logged (metrics, params,
tags, artifacts). Each item (a table and/or a figure; one module in `analysis/`) reads one
study, i.e. the MLflow experiment named after `studies/<study>.yaml` (its `name:`, else
the file stem), through `fairl.runs.read` (which runs: see there). REPORT.md names every run
id it used. The items themselves are passed in (`fairl.cli` hands over `analysis.ITEMS`):
this module never imports analysis/.

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
import io
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from fairl.config import ConfigError, load_yaml
from fairl.paths import project_root, redact
from fairl.runs.read import MissingStudy, StudyRuns, TrialRun, load_study_runs
from fairl.runs.store import resolve_tracking_uri
from fairl.runs.write import error_line


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


def write_report(out: Path, uri: str, results: dict[str, Section | MissingStudy | str]) -> Path:
    """REPORT.md: every built item with caption, provenance; missing ones with their command."""
    lines = ["# fairl report", "",
             ("Generated by `fairl report` from the MLflow runs of the studies in `studies/`; "
             "nothing was refitted. Regenerate with `fairl report` (or `make report`)."), "",
             f"Tracking store: `{redact(uri)}`", ""]
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


def build_report(items: Mapping[str, Callable[[Options], Section]], uri: str | None = None,
                 out: str | Path | None = None, only: list[str] | None = None,
                 studies_dir: str | Path | None = None, run: str | None = None,
                 top_k: int = 10, stream=None) -> int:
    """Build the asked items (default: all of `items`, name -> builder, in report order) into
    `out` (default: reports/ of the checkout); returns the exit code."""
    stream = stream or sys.stdout
    uri = resolve_tracking_uri(uri)
    out = Path(out) if out else project_root() / "reports"
    studies_dir = studies_dir or project_root() / "studies"
    out.mkdir(parents=True, exist_ok=True)
    options = Options(out=out, uri=uri, studies_dir=Path(studies_dir), run=run, top_k=top_k)
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
            print(f"{name}: missing ({missing}); run: {missing.command}",
                  file=sys.stderr if only else stream)
            if only:
                code = 1
        except Exception as error:  # noqa: BLE001 (one broken item must not hide the others)
            results[name] = error_line(error)
            text = io.StringIO()
            traceback.print_exc(file=text)
            print(f"{name}: FAILED: {results[name]}\n{text.getvalue()}", file=sys.stderr)
            code = 1
    if not only:
        path = write_report(out, uri, results)
        print(f"report: {path}", file=stream)
    return code
