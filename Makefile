# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch==2.13.0 takes the CPU build that lies on our machines; a looser spec pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Extra options for `vanishing compare`, e.g. make run ARGS="--epochs 1 --seeds 0".
ARGS   ?=

.PHONY: install run test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $@

run: install
	$(BIN)/vanishing data fetch
	$(BIN)/vanishing compare $(ARGS)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
