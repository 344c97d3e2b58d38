# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing. torch is pinned so a CPU machine never
# pulls the multi-GB CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slurm lint format bench clean api-docs gpu-wheels

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

# Wheels of the Python packages the lent GPU machine lacks (pydantic and its needs; it has no
# network), at this venv's versions, into .whl/ for bench/gpu_session.sh to install there (see
# docs/benchmarks.md, "GPU session"). Pure-Python wheels fit any platform; pydantic-core's is
# CPython 3.12 manylinux x86-64, what that machine runs. typing-extensions is there, but pydantic
# needs a recent one (>= 4.16): this venv's is carried too (backward compatible, so it is safe
# to put before the machine's).
GPU_WHEELS := pydantic pydantic-core annotated-types typing-inspection typing-extensions
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	set -e; pins=; for p in $(GPU_WHEELS); do \
	  v=$$($(BIN)/python -m pip show $$p | sed -n 's/^Version: //p'); test -n "$$v"; pins="$$pins $$p==$$v"; done; \
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(addprefix --platform ,$(GPU_PLATFORMS)) -d .whl $$pins
	@ls .whl && du -ch .whl/*.whl | tail -n 1

clean:
	rm -rf $(VENV) runs demo-out
