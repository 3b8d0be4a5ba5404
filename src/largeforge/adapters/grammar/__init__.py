"""Grammar-constrained decoding: compiled `Constraint`s and per-sequence token masks."""
