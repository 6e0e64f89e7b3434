# Two commands on a fresh machine with Python 3.11 and make:
#   make serve   install into .venv (core + ONNX, no torch) and serve the bundled demo model
#   make test    install the development dependencies and run lint, type checks and the tests
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
# the [torch] extra says torch>=2.4; pin the CPU build first so pip never pulls the multi-GB CUDA one
TORCH_PIN ?= torch==2.13.0

.PHONY: serve test install dev lint typecheck pytest clean bench

# the first contact: the core (scikit-learn/skops, the demo) and ONNX; the heavy formats (torch, xgboost,
# lightgbm, mlflow) come with their extras. The dev and bench stamps below install a superset and touch this one.
# --no-compile: pip would byte-compile every module of scipy, pandas, sklearn... (2/3 of the install's CPU time
# here); Python compiles, once, only those the server imports. Not for dev: where PYTHONDONTWRITEBYTECODE is set
# (this machine's environment does), Python writes no bytecode, and every test process would compile all it imports
# (torch, sklearn, scipy, pandas and the server: about 10 s against 2 s with bytecode).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e '.[serve]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '$(TORCH_PIN)'
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

$(VENV)/.installed-bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '$(TORCH_PIN)'
	$(BIN)/python -m pip install -q -e '.[all,bench]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

serve: $(VENV)/.installed
	$(BIN)/modelapi serve $(ARGS)

lint: dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: dev
	$(BIN)/mypy

# two workers (pytest-xdist): on a 2-core machine the suite took 7 min 46 s against 10 min 44 s in one process,
# as most of a test's time is a server starting or a client waiting. Fixed at 2, not one per core: the end-to-end
# tests run servers and load of their own, and many more at once would only make them wait on each other.
pytest: dev
	$(BIN)/pytest -q -n 2

test: lint typecheck pytest

# Throughput and latency against the in-process limit and a Flask baseline (docs/benchmarks.md); not run in CI.
# Needs wrk (apt-get install -y wrk) and 2 cores. ARGS=--quick: 1 s per cell, to check the harness.
bench: $(VENV)/.installed-bench
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y wrk" >&2; exit 1; }
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
