# Two commands set everything up on a fresh machine:
#   make demo   the whole pipeline on the built-in default corpus (fmforge run)
#   make test   the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU PyTorch on this machine (a wheel on disk); elsewhere pip fetches the standard build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test,ray,serve,finetune,web]'
	touch $@

demo: install
	$(BIN)/fmforge run

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf runs .pytest_cache
