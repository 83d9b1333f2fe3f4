# llmst developer and user entry points. `make demo` and `make test` are the README's quick start.
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
BIN := $(VENV)/bin

.PHONY: setup vllm-env demo test test-fast lint format

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $@

vllm-env: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed: scripts/install_vllm.sh
	bash scripts/install_vllm.sh $(VLLM_VENV)
	touch $@

# The main job on the shipped SST-2 demo corpus: label -> filter -> train a student -> labeler vs student.
demo: setup
	LLMST=$(BIN)/llmst bash scripts/demo.sh

# Everything, including the end-to-end tests against a real vLLM server. pytest's exit 5 (no tests) fails.
test: setup vllm-env
	LLMST_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest -q tests

# Unit and integration tests without the vLLM server.
test-fast: setup
	$(BIN)/python -m pytest -q tests -m "not vllm"

lint: setup
	$(BIN)/ruff check llmst tests eval scripts
	$(BIN)/ruff format --check llmst tests eval scripts

format:
	$(BIN)/ruff check --fix llmst tests eval scripts
	$(BIN)/ruff format llmst tests eval scripts
