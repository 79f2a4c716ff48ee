# Two commands on a fresh machine (Python 3.11 only):
#   make demo   set up .venv, run the main job on the embedded default world, build the report
#   make test   set up .venv, run the whole test suite
#   make paper  (GPU + hub downloads) the paper's setting: build its world, the suite, reports/paper/
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo paper test report bench lint clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-assets.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to 2.13.0 in pyproject (the local CPU wheel; never a CUDA build)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt
	touch $@

demo: setup
	$(BIN)/fairl demo

# configs/world_paper.yaml's world (built if missing), the suite on it, reports/paper/REPORT.md;
# `fairl world build --plan --config configs/world_paper.yaml` says what it needs first
paper: setup
	$(BIN)/fairl paper

test: setup lint
	$(BIN)/python -m pytest -q

report: setup
	$(BIN)/fairl report

bench: setup
	$(BIN)/python bench/fit.py

# ruff; the import layers (pyproject [tool.importlinter]); declared = imported deps (deptry)
lint: setup
	$(BIN)/ruff check fairl tests bench analysis
	$(BIN)/lint-imports
	$(BIN)/deptry .

clean:
	rm -rf $(VENV) .cache
