# Two commands from a fresh clone: `make demo` and `make test`. Both are idempotent:
# the virtual environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test test-all test-cluster bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

# torch first, pinned: pip then takes the local CPU wheel instead of several GB of CUDA packages.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "torch==2.13.*"
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps "torchattacks==3.5.*"
	touch $@

$(DEVSTAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,cluster]"
	touch $@

demo: $(STAMP)
	$(BIN)/search run spaces/quickstart.yaml

# pytest exits 5 when it collected no test: a run that tested nothing must fail, and say so.
PYTEST_ARGS ?=
NO_TESTS := if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests (exit 5)" >&2; fi; exit $$rc

test: $(DEVSTAMP)  ## the quick default: every test not marked slow
	$(BIN)/python -m pytest $(PYTEST_ARGS) || { rc=$$?; $(NO_TESTS); }

test-all: $(DEVSTAMP)  ## the slow tests too (what CI runs)
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS) || { rc=$$?; $(NO_TESTS); }

# The multi-node tests (job submission, node loss, resume, PostgreSQL-backed MLflow): a few minutes.
test-cluster: $(DEVSTAMP)
	$(BIN)/python -m pytest -m slow tests/search/test_cluster.py

# Every benchmark (about 30 min on 2 cores; BENCH_ARGS=--quick for smoke-test sizes): bench/results/*.json
# and the generated table in docs/performance.md. GPU figures: bench/gpu_packing.py on a GPU machine.
bench: $(DEVSTAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

lint: $(DEVSTAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
