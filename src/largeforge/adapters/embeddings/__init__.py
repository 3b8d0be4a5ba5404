"""Sentence-embedding adapters."""
