"""The generation and tool-call tasks end to end on the tiny model, through
`TransformersEngineFactory` (a random model: the scores only have to be well formed)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from largeforge.adapters.data.sources import FileRowSource
from largeforge.adapters.hf.variant_engines import BASE_SUFFIX, TransformersEngineFactory
from largeforge.adapters.tools import tool_call_format
from largeforge.application.generation_eval import GenerationEvalTask, read_generation_file
from largeforge.application.tool_eval import (
    BUNDLED_FILE,
    BUNDLED_PACKAGE,
    ToolCallEvalTask,
    read_tool_file,
)
from largeforge.domain.evaluation import ModelVariant, Score, VariantKind

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval" / "generation.jsonl"


@pytest.fixture(scope="module")
def factory() -> TransformersEngineFactory:
    return TransformersEngineFactory(device="cpu", max_model_len=1024, max_num_seqs=8)


def base(model_dir: Path) -> ModelVariant:
    return ModelVariant("base", VariantKind.BASE, str(model_dir))


def check(scores: tuple[Score, ...], task: str, counts: dict[str, int]) -> None:
    assert {s.metric: s.n for s in scores} == counts
    for score in scores:
        assert score.task == task
        assert score.low is not None
        assert score.high is not None
        assert 0.0 <= score.low <= score.value <= score.high <= 1.0


def test_the_generation_task_runs_on_the_tiny_model(
    tiny_model_dir: Path, factory: TransformersEngineFactory
) -> None:
    cases = read_generation_file(FileRowSource(), str(EXAMPLES))
    by_kind = {case.match: case for case in cases}  # one row of each match kind
    task = GenerationEvalTask("generate", list(by_kind.values()), factory, max_tokens=8)
    scores = task.evaluate(base(tiny_model_dir))
    check(scores, "generate", {"match": 4, "valid_json": 1})


def test_the_tool_call_task_runs_with_and_without_the_grammar(
    tiny_model_dir: Path, factory: TransformersEngineFactory
) -> None:
    path = str(resources.files(BUNDLED_PACKAGE) / BUNDLED_FILE)
    cases = read_tool_file(FileRowSource(), path)
    picked = [cases[0], cases[8], next(c for c in cases if not c.expected)]
    constrained = ToolCallEvalTask("tools", picked, factory, tool_call_format, max_tokens=24)
    requests = constrained.requests("base")
    assert all(r.tools and r.params.greedy for r in requests)
    scores = constrained.evaluate(base(tiny_model_dir))
    counts = {s.metric: s.n for s in scores}
    assert counts["accuracy"] == 3
    assert counts["function"] == 2
    assert counts["no_call"] == 1
    check(scores, "tools", counts)
    # the grammar allows only valid calls: whatever calls the random model made are valid JSON
    assert next((s.value for s in scores if s.metric == "valid_json"), 1.0) == 1.0

    free = ToolCallEvalTask(
        "tools-free", picked, factory, tool_call_format, grammar=False, max_tokens=24
    )
    free_scores = free.evaluate(base(tiny_model_dir))
    check(free_scores, "tools-free", {s.metric: s.n for s in free_scores})
    assert {s.metric for s in free_scores} >= {"accuracy", "function", "no_call"}


def test_an_adapter_variant_is_served_under_its_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    from largeforge.application.serving import TextGeneration
    from tests.support import build_tiny_adapter

    adapter = build_tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    variant = ModelVariant("tuned", VariantKind.ADAPTER, str(tiny_model_dir), str(adapter))
    engine = TransformersEngineFactory(device="cpu", max_model_len=256).open(variant)
    try:
        assert engine.model_id == f"tuned{BASE_SUFFIX}"
        assert engine.adapters == ("tuned",)
        assert TextGeneration([engine]).base_of("tuned") == f"tuned{BASE_SUFFIX}"
    finally:
        engine.close()
