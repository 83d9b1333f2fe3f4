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

# Label the shipped demo corpus with the default model, then score it against its gold labels.
demo: setup
	$(BIN)/llmst label examples/reviews.jsonl -o outputs/demo/reviews.labeled.jsonl --task sentiment --overwrite
	$(BIN)/llmst evaluate outputs/demo/reviews.labeled.jsonl --gold-field gold --report-dir outputs/demo/report

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
