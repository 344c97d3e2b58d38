# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing. torch is pinned so a CPU machine never
# pulls the multi-GB CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slurm lint format bench clean api-docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test,lint]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reglab demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Sweeps and tune worker jobs on a real single-node SLURM cluster started by the tests
# (tests/slurm_cluster.py; needs root and Debian's slurmctld slurmd slurmdbd slurm-client munge
# mariadb-server, else they skip).
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm tests/test_slurm.py tests/test_slurm_tune.py

# ruff (lint + format check) and mypy, configured in pyproject.toml; also run by .ci/run and
# by the pre-commit hooks (.pre-commit-config.yaml).
LINT_PATHS := src tests bench tools
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# The public API's reference, from its docstrings (tests/test_api_reference.py keeps it current).
api-docs: $(STAMP)
	$(BIN)/python tools/api_reference.py > docs/api.md

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

# Every benchmark (or those named: make bench BENCH="penalties loop"), then the README table is
# regenerated from bench/results.json even when one failed; the exit status is run_all.py's.
bench: $(STAMP)
	REGLAB_DATA=$${REGLAB_DATA:-../shared/data} $(BIN)/python bench/run_all.py $(BENCH); \
	status=$$?; $(BIN)/python bench/report.py && exit $$status

clean:
	rm -rf $(VENV) runs demo-out
