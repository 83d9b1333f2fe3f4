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

# Everything, including the end-to-end tests against a real vLLM server and a local Ray cluster. pytest's exit 5
# (no tests) fails. Two workers (pytest-xdist; a test file stays on one worker, so its module fixtures such as
# the vLLM server start once) of one torch thread each use the 2 cores without oversubscribing them.
test: setup vllm-env
	OMP_NUM_THREADS=1 LLMST_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python \
		$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 tests

# Unit and integration tests without the vLLM server.
test-fast: setup
	$(BIN)/python -m pytest -q tests -m "not vllm"

lint: setup
	$(BIN)/ruff check llmst tests eval scripts
	$(BIN)/ruff format --check llmst tests eval scripts

format:
	$(BIN)/ruff check --fix llmst tests eval scripts
	$(BIN)/ruff format llmst tests eval scripts
