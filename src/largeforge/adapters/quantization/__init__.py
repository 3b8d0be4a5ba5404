"""Quantization engines (llm-compressor) and the model inspection they need."""
