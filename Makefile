# Two commands matter on a fresh machine: `make demo` and `make test`.
# Both create .venv (Python 3.11+) and install the project with its extras when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-live test lint typecheck bench bench-json clean venv chain

venv: $(STAMP) chain

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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

test: $(STAMP)
	$(BIN)/ruff check mycelium_mono tests benchmarks examples
	$(BIN)/mypy mycelium_mono
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

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
