"""Domain errors: every error LargeForge raises on purpose derives from `LargeForgeError`."""

from __future__ import annotations


class LargeForgeError(Exception):
    """Base of all LargeForge errors. The message is one line a person can act on."""


class ConfigError(LargeForgeError):
    """A run file or option is invalid (unknown key, wrong type, missing file)."""


class ModelNotFoundError(LargeForgeError):
    """A model reference resolved to nothing: not an alias, not a local path, not reachable."""


class DatasetError(LargeForgeError):
    """A dataset cannot be read or holds no usable rows."""


class EvaluationError(LargeForgeError):
    """An evaluation task cannot run: an unknown task, a bad task file, data out of reach."""


class InvalidTransitionError(LargeForgeError):
    """A state machine was asked for a transition its current state does not allow."""


class TrainingError(LargeForgeError):
    """Training failed inside the trainer backend."""


class BackendUnavailableError(LargeForgeError):
    """A required library or device is missing; the message names the fix."""


class EngineFaultError(LargeForgeError):
    """An inference engine returned an incomplete result: a fault of the server, not the request."""


class InvalidRequestError(LargeForgeError):
    """A generation request is invalid; `param` names the offending parameter."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthExceededError(InvalidRequestError):
    """The prompt plus the requested tokens do not fit the model's context window."""


class ModelNotServedError(LargeForgeError):
    """A request named a model this server does not serve."""

    def __init__(self, model: str, available: tuple[str, ...]) -> None:
        names = ", ".join(available) or "none"
        super().__init__(f"The model '{model}' does not exist. Available models: {names}.")
        self.model = model
        self.available = available


class EngineOverloadedError(LargeForgeError):
    """The engine's queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineUnavailableError(LargeForgeError):
    """The engine is shutting down (HTTP 503): retry after `retry_after` s, on another replica."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReplicaError(LargeForgeError):
    """A replica of an expert failed: `status` is its HTTP status, None when it never answered.

    `body` is its OpenAI error body when it sent one; `retry_after` its Retry-After in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: dict[str, object] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after

    @property
    def is_client_error(self) -> bool:
        """The request itself was refused (4xx other than 408/429): no other replica would help."""
        status = self.status
        return status is not None and 400 <= status < 500 and status not in {408, 429}


class NoReplicaAvailableError(LargeForgeError):
    """Every replica that could answer is open, draining or down; retry after `retry_after` s."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CascadeExhaustedError(LargeForgeError):
    """Every step of a cascade failed its checks (or could not answer); `steps` says why, one
    `step:expert: reason` per step."""

    def __init__(self, cascade: str, steps: tuple[str, ...], cost: float = 0.0) -> None:
        super().__init__(
            f"no step of cascade '{cascade}' gave an answer that passed its checks: "
            + "; ".join(steps)
        )
        self.cascade = cascade
        self.steps = steps
        self.cost = cost  # what the failed steps' answers cost


class AdapterNotLoadedError(LargeForgeError):
    """An unload named a LoRA adapter this server does not serve (HTTP 404)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The lora adapter '{name}' cannot be found.")
        self.name = name
