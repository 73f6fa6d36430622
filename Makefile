# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet
# torch==2.13.0 takes the CPU build that lies on our machines; a looser spec pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Extra options for `vanishing compare`, e.g. make run ARGS="--epochs 1 --seeds 0".
ARGS   ?=
# Extra options for `vanishing live`, e.g. make live LIVE_ARGS="--port 9000 runs/compare".
LIVE_ARGS ?=

.PHONY: install install-test install-ray install-dev run live test lint typecheck clean

# Each install leaves a stamp in the venv and is redone only when pyproject.toml changes, so
# `make run` then `make test` installs the test extras once and reinstalls nothing else.
install: $(VENV)/.installed            # what running needs: the package and its dependencies
install-test: $(VENV)/.installed-test  # + pytest, playwright, hypothesis and ray (the suite's Ray test)
install-ray: $(VENV)/.installed-ray    # + ray, for `vanishing sweep --backend ray`
install-dev: $(VENV)/.installed-dev    # + the test extras, ruff and mypy

# torch first, pinned, so that the package's looser `torch>=2.1` finds it already there.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) -e .
	touch $@

$(VENV)/.installed-%: pyproject.toml $(VENV)/.torch
	$(PIP) -e '.[$*]'
	touch $@

run: install
	$(BIN)/vanishing data fetch
	$(BIN)/vanishing compare $(ARGS)

# The live page: the data first (then training works offline), then the server, which prints its
# URL and opens it in the browser; Ctrl-C stops it and its training (the runs resume later).
live: install
	$(BIN)/vanishing data fetch
	$(BIN)/vanishing live $(LIVE_ARGS)

test: install-test
	$(BIN)/python -m pytest

# ruff's checks and format, then mypy over src (its settings: [tool.mypy] in pyproject.toml).
lint: install-dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

# mypy alone.
typecheck: install-dev
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
