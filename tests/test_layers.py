"""The import layers in pyproject.toml: every fairl module is in them, and an upward import fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]


def test_every_fairl_module_is_in_the_layers():
    layers = contracts()[0]["layers"]
    listed = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {f"fairl.{path.stem}" for path in (ROOT / "fairl").glob("*.py")
               if path.stem != "__init__"}
    packages = {f"fairl.{path.parent.name}" for path in (ROOT / "fairl").glob("*/__init__.py")}
    assert modules | packages <= listed, sorted((modules | packages) - listed)
    assert "analysis" in listed


def test_the_layers_hold_and_an_upward_import_is_rejected(tmp_path):
    kept = subprocess.run([str(LINT_IMPORTS)], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=300)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    # A copy of the tree in which the metrics (a low layer) import the CLI (the top one).
    for name in ("fairl", "analysis"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "default_world"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    metrics = tmp_path / "fairl" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nimport fairl.cli  # noqa: E402,F401\n")
    broken = subprocess.run([str(LINT_IMPORTS)], cwd=tmp_path, capture_output=True, text=True, check=False,
                            timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin"})
    assert broken.returncode != 0
    assert "fairl.metrics is not allowed to import fairl.cli" in broken.stdout, broken.stdout


def import_cycles(*packages: str) -> list[list[str]]:
    """Strongly connected groups (> 1 module) of the import graph, function-level imports too."""
    import grimp

    graph = grimp.build_graph(*packages)
    edges = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in edges.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return groups


def test_the_import_graph_has_no_cycle():
    # A package's __init__ that imports its own submodules (fairl.irl's lazy names) is not a
    # cycle of the code: grimp counts only real import statements, so none should be left.
    assert import_cycles("fairl", "analysis") == []
