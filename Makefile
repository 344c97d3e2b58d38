# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing. torch is pinned so a CPU machine never
# pulls the multi-GB CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reglab demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	REGLAB_DATA=$${REGLAB_DATA:-../shared/data} $(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs demo-out bench/results.json
