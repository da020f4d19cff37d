# The two commands the README promises: `make demo` and `make test`.
# `make docs` builds the site into site/.
# Both create .venv on first use; nothing else needs to be installed beforehand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest docs coverage bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run pip whenever the package metadata changes.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.bench-installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/agentsync demo

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check agentsync tests bench examples fuzz
	$(BIN)/ruff format --check agentsync tests bench examples fuzz

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy --strict agentsync

pytest: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -n auto --cov=agentsync --cov-report=term

# --strict: a broken link, a missing page or a docstring griffe cannot read fails.
docs: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck pytest docs

bench: $(VENV)/.bench-installed $(VENV)/.dev-installed
	$(BIN)/python bench/crdt_ops.py --json bench/results/crdt_ops.json
	$(BIN)/python bench/convergence.py --json bench/results/convergence.json
	$(BIN)/python bench/throughput.py --json bench/results/throughput.json
	$(BIN)/python bench/icde19.py --json bench/results/icde19.json
	$(BIN)/python bench/durability.py --json bench/results/durability.json
	$(BIN)/python bench/compaction.py --json bench/results/compaction.json
	$(BIN)/python bench/discovery.py --json bench/results/discovery.json
	$(BIN)/python bench/security.py --json bench/results/security.json
	$(BIN)/python bench/plots.py   # docs/img/bench/*.png from the JSON above: commit them

# The decode fuzz target for FUZZ_SECONDS, outside the default suite: under atheris where
# a wheel installs, else under its pure-Python driver (it prints which). Crashes land in
# fuzz/crashers/decode/, which tests/test_fuzz_regressions.py replays: commit them.
FUZZ_SECONDS ?= 60

$(VENV)/.fuzz-installed: | $(BIN)/python
	$(BIN)/python -m pip install --quiet 'atheris>=2.3' \
		|| echo "atheris did not install here: make fuzz runs the pure-Python driver"
	touch $@

fuzz: $(VENV)/.installed $(VENV)/.fuzz-installed
	$(BIN)/python -m fuzz.decode_target --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage .hypothesis
