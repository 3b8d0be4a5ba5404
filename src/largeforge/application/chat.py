"""The chat use case: validate a request, pick the served model, generate."""

from __future__ import annotations

from collections.abc import Mapping

from largeforge.application.ports import InferenceEngine
from largeforge.domain.errors import ModelNotServedError
from largeforge.domain.generation import ChatRequest, Completion


class ChatCompletion:
    """Answer chat requests with one of the served engines, addressed by model id."""

    def __init__(self, engines: Mapping[str, InferenceEngine]) -> None:
        self._engines = dict(engines)

    def models(self) -> tuple[str, ...]:
        """The model ids this service answers for."""
        return tuple(self._engines)

    def engine(self, model: str) -> InferenceEngine:
        try:
            return self._engines[model]
        except KeyError:
            raise ModelNotServedError(model, self.models()) from None

    async def execute(self, request: ChatRequest) -> Completion:
        """Generate the assistant's reply to `request.messages`."""
        return await self.engine(request.model).chat(request.messages, request.params)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
