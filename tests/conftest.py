"""Shared fixtures: sample examples, a container wired with fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from largeforge.config import RunConfig, ServeSettings, Settings
from largeforge.container import Container
from largeforge.domain import Conversation, Message, Role, SftExample
from largeforge.domain.training import TrainingMethod
from tests.fakes import (
    FakeClock,
    FakeEncoderFactory,
    FakeInferenceEngine,
    FakeModelMerger,
    FakeModelResolver,
    FakeModelTrainer,
    FakePreferenceTrainer,
    FakeTokenizerFactsReader,
    InMemoryRowSource,
    InMemoryRunStore,
)


def make_example(question: str, answer: str, system: str | None = None) -> SftExample:
    messages = [Message(Role.SYSTEM, system)] if system else []
    messages += [Message(Role.USER, question), Message(Role.ASSISTANT, answer)]
    return SftExample(Conversation(tuple(messages)), source="test")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer, built once per test session."""
    from tests.support import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def examples() -> tuple[SftExample, ...]:
    return tuple(make_example(f"question {i}?", f"answer {i}.") for i in range(20))


def messages_row(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def make_fakes() -> dict[str, Any]:
    """A fresh fake for every port."""
    return {
        "clock": FakeClock(),
        "resolver": FakeModelResolver(),
        "rows": InMemoryRowSource(
            {"data.jsonl": [messages_row(f"question {i}?", f"answer {i}.") for i in range(20)]}
        ),
        "encoders": FakeEncoderFactory(),
        "trainer": FakeModelTrainer(),
        "preference_trainer": FakePreferenceTrainer(),
        "merger": FakeModelMerger(),
        "store": InMemoryRunStore(),
        "facts": FakeTokenizerFactsReader(),
        "engine": FakeInferenceEngine(),
    }


@pytest.fixture
def fakes() -> dict[str, Any]:
    return make_fakes()


def make_container(fakes: dict[str, Any] | None = None) -> Any:
    """The real composition root with every adapter overridden by a fake."""
    fakes = fakes or make_fakes()
    settings = Settings(
        run=RunConfig(model="tiny", dataset="data.jsonl", training={"max_steps": 3}),
        serve=ServeSettings(model="tiny", served_model_name="fake-model"),
    )
    c = Container.from_settings(settings)
    c.clock.override(fakes["clock"])
    c.model_resolver.override(fakes["resolver"])
    c.row_source.override(fakes["rows"])
    c.encoder_factory.override(fakes["encoders"])
    c.trainers.override(
        {TrainingMethod.SFT: fakes["trainer"], TrainingMethod.DPO: fakes["preference_trainer"]}
    )
    c.merger.override(fakes["merger"])
    c.run_store.override(fakes["store"])
    c.tokenizer_facts.override(fakes["facts"])
    c.inference_engine.override(fakes["engine"])
    return c


@pytest.fixture
def container(fakes: dict[str, Any]) -> Iterator[Any]:
    c = make_container(fakes)
    yield c
    c.unwire()
    c.reset_override()
    c.reset_singletons()
