# Two commands matter on a fresh machine: `make demo` and `make test`.
# Both create .venv (Python 3.11+) and install the project with its extras when needed.
# `make test` runs noxfile.py's matrix: ruff once, then mypy --strict and the suite on
# Python 3.11, 3.12 and 3.13, each in its own venv under .nox/ (reused between runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-live test test-here lint typecheck bench bench-json bench-instructions clean venv chain

venv: $(STAMP) chain

$(STAMP): pyproject.toml examples/bandit/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -r examples/bandit/requirements.txt
	$(MAKE) chain
	touch $(STAMP)

# Bandit's live chain (anvil, Uniswap V2 v2-core, solc-js), pinned by package-lock.json.
CHAIN := examples/bandit/chain
chain: $(CHAIN)/node_modules/.package-lock.json

$(CHAIN)/node_modules/.package-lock.json: $(CHAIN)/package-lock.json
	cd $(CHAIN) && npm ci --no-audit --no-fund --loglevel=error

demo-live: $(STAMP)
	$(BIN)/python -m bandit live

demo: $(STAMP)
	$(BIN)/python -m bandit monolith

NOX_ARGS ?=
test: $(STAMP)
	$(BIN)/python -m nox $(NOX_ARGS)

# The suite on .venv's Python alone: the quick loop while editing, not what CI runs.
test-here: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy mycelium_mono

bench: $(STAMP)
	$(BIN)/python benchmarks/report.py

bench-json: $(STAMP)
	mkdir -p .benchmarks
	$(BIN)/python benchmarks/report.py --json .benchmarks/latest.json

# Instructions per emit under callgrind on every supported Python (minutes, not part of
# `make test`), then one table of them and the bars checked on those counts.
bench-instructions: $(STAMP)
	mkdir -p .benchmarks
	$(BIN)/python -m nox -t instructions
	$(BIN)/python benchmarks/report.py --instructions .benchmarks/instructions-*.json

clean:
	rm -rf $(VENV) .nox build dist .pytest_cache .mypy_cache .ruff_cache .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
