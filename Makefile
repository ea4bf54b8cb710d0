# echo-vlsm: the two commands a reader needs are `make demo` and `make test`.
# Both create .venv on first use (python3 -m venv + pip install -e '.[dev]').

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= demo
# Jobs at once for `make demo` (the 2 cores of a laptop; one job per GPU: JOBS=auto).
JOBS ?= 2
# Two test workers on a 2-core machine; one BLAS thread each to avoid oversubscription.
PYTEST_ARGS ?= -n 2

.PHONY: demo demo-beyond test test-fast rehearsal lab lint bench clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

## The whole chain on the built-in echo phantom, tiny models, CPU.
demo: $(STAMP)
	$(BIN)/echo-vlsm reproduce --profile $(PROFILE) --jobs $(JOBS)

## Beyond the study on the same phantom: seeds, mixed + provenance, real fractions, U-Net
## (reuses the demo's prepared data and finished runs).
demo-beyond: $(STAMP)
	$(BIN)/echo-vlsm reproduce --profile demo-beyond --jobs $(JOBS)

## The paper profile rehearsed on stand-ins in the real formats (random weights), CPU.
rehearsal: $(STAMP)
	$(BIN)/echo-vlsm rehearse

## Unit tests, notebook tests and, under nbval, every notebook top to bottom with its defaults
## (01..10 in order on one xdist worker, in a scratch project: tests/notebooks_ci.py).
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS) \
		--nbval-lax --dist loadgroup

## The fast lane: unit tests and doctests, no notebooks, no multi-process runs, nothing slow.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS) \
		-m "not notebook and not ddp and not slow"

## JupyterLab on the notebooks (installs the `lab` extra on first use).
lab: $(STAMP)
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	$(BIN)/jupyter lab notebooks/

## ruff, the layering rule and the type checker (mypy over echo_vlsm/, [tool.mypy] in
## pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python tools/imports.py --check
	$(BIN)/mypy echo_vlsm

bench: $(STAMP)
	$(BIN)/python benchmarks/sdm.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/epoch.py

## What the demo and the rehearsal wrote (never runs/paper, data/raw/camus or other downloads).
clean:
	rm -rf runs/demo* runs/rehearsal* figures/demo* paper/demo* data/phantom* data/raw/phantom .cache \
		data/rehearsal figures/rehearsal* paper/rehearsal* data/*-fdr
