# Two commands matter on a fresh machine: `make demo` and `make test`.
# Both create .venv (Python 3.11+) and install the project with its extras when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench bench-json clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml examples/bandit/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -r examples/bandit/requirements.txt
	touch $(STAMP)

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
