# The two commands a user needs: `make demo` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch 2.13.0 has a local CPU wheel on this machine; pin it first so no dependency pulls a CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: test lint setup demo demo-full clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/ruff check sparcom tests benchmarks
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check sparcom tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info
