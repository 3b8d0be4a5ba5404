"""Use cases over ports. Imports only the domain, the stdlib and structlog."""

from largeforge.application.chat import ChatCompletion
from largeforge.application.training import RunTraining, TrainingOutcome

__all__ = ["ChatCompletion", "RunTraining", "TrainingOutcome"]
