"""The embedding API shown in the README: build the container in code, swap adapters, run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fakes import (
    FakeEncoderFactory,
    FakeModelMerger,
    FakeModelResolver,
    FakeModelTrainer,
)


def test_readme_embedding_example_runs_with_swapped_adapters(tmp_path: Path) -> None:
    from largeforge import Container, RunConfig, Settings
    from largeforge.domain.training import TrainingMethod

    config = RunConfig(model="tiny", output_dir=str(tmp_path / "runs"), training={"max_steps": 2})
    container = Container.from_settings(Settings(run=config))
    container.model_resolver.override(FakeModelResolver())
    container.encoder_factory.override(FakeEncoderFactory())
    container.trainers.override({TrainingMethod.SFT: FakeModelTrainer()})
    container.merger.override(FakeModelMerger())

    outcome = container.run_training().execute(config.to_plan(), config=config.model_dump())

    assert outcome.run.state.value == "succeeded"
    run_dir = Path(outcome.run_dir)
    assert run_dir.parent == tmp_path / "runs"
    assert (run_dir / "run.json").is_file()  # the real filesystem store and the bundled sample
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys, largeforge\n"
        "from largeforge import Container, RunConfig, Settings\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_readme_generation_example_runs_with_a_swapped_engine() -> None:
    import asyncio

    from largeforge import Container, ServeSettings, Settings
    from largeforge.domain import ChatRequest, Message, Role, SamplingParams
    from tests.fakes import FakeInferenceEngine

    settings = Settings(serve=ServeSettings(model="tiny", served_model_name="fake-model"))
    container = Container.from_settings(settings)
    container.model_resolver.override(FakeModelResolver())
    container.inference_engine.override(FakeInferenceEngine())
    generation = container.generation()
    question = (Message(Role.USER, "Name three primary colours."),)
    request = ChatRequest("fake-model", question, SamplingParams(max_tokens=32, temperature=0))
    assert asyncio.run(generation.chat(request)).text == "Name three primary colours."
    generation.close()
