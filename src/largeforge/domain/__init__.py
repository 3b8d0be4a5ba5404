"""The framework-free core: values, state machines and errors (stdlib only)."""

from largeforge.domain.datasets import (
    Conversation,
    DatasetIssue,
    IssueAction,
    LoadedDataset,
    Message,
    Role,
    SftExample,
)
from largeforge.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    ContextLengthExceededError,
    DatasetError,
    InvalidRequestError,
    InvalidTransitionError,
    LargeForgeError,
    ModelNotFoundError,
    ModelNotServedError,
    TrainingError,
)
from largeforge.domain.generation import (
    ChatRequest,
    Completion,
    FinishReason,
    SamplingParams,
    Usage,
)
from largeforge.domain.training import (
    LoraSpec,
    RunState,
    StepMetrics,
    TrainingPlan,
    TrainingResult,
    TrainingRun,
)

__all__ = [
    "BackendUnavailableError",
    "ChatRequest",
    "Completion",
    "ConfigError",
    "ContextLengthExceededError",
    "Conversation",
    "DatasetError",
    "DatasetIssue",
    "FinishReason",
    "InvalidRequestError",
    "InvalidTransitionError",
    "IssueAction",
    "LargeForgeError",
    "LoadedDataset",
    "LoraSpec",
    "Message",
    "ModelNotFoundError",
    "ModelNotServedError",
    "Role",
    "RunState",
    "SamplingParams",
    "SftExample",
    "StepMetrics",
    "TrainingError",
    "TrainingPlan",
    "TrainingResult",
    "TrainingRun",
    "Usage",
]
