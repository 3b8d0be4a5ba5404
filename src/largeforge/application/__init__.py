"""Use cases over ports. Imports only the domain, the stdlib and structlog."""

from largeforge.application.serving import TextGeneration
from largeforge.application.training import RunTraining, TrainingOutcome

__all__ = ["RunTraining", "TextGeneration", "TrainingOutcome"]
