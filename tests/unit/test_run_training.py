"""RunTraining through the real container, every adapter swapped for a fake."""

from __future__ import annotations

from typing import Any

import pytest

from largeforge.domain import DatasetError, LoadedDataset, ModelNotFoundError, RunState
from largeforge.domain.datasets import DatasetIssue
from largeforge.domain.errors import TrainingError


def plan_for(container: Any, **changes: Any) -> Any:
    from dataclasses import replace

    from largeforge.config import RunConfig

    base = RunConfig(model="tiny", dataset="data.jsonl", training={"max_steps": 3}).to_plan()
    return replace(base, **changes)


def test_successful_run_is_recorded_end_to_end(container: Any, fakes: dict[str, Any]) -> None:
    outcome = container.run_training().execute(plan_for(container), config={"model": "tiny"})

    store, trainer, merger = fakes["store"], fakes["trainer"], fakes["merger"]
    run = store.runs[outcome.run.run_id]
    assert run.state is RunState.SUCCEEDED
    assert store.states[run.run_id] == ["pending", "running", "succeeded"]
    assert store.configs[run.run_id] == {"model": "tiny"}
    assert [m.step for m in store.metrics[run.run_id]] == [1, 2, 3]
    call = trainer.calls[0]
    assert call["model_dir"] == "/models/tiny"
    assert len(call["train"]) + len(call["eval"]) == 20
    assert len(call["eval"]) == 2  # val_size 0.1
    assert merger.merges == [
        ("/models/tiny", f"{outcome.run_dir}/adapter", f"{outcome.run_dir}/merged")
    ]
    assert run.merged_dir == f"{outcome.run_dir}/merged"
    assert run.result is not None
    assert run.result.eval_loss_after < run.result.eval_loss_before


def test_no_merge_when_plan_says_so(container: Any, fakes: dict[str, Any]) -> None:
    outcome = container.run_training().execute(plan_for(container, merge=False))
    assert fakes["merger"].merges == []
    assert outcome.run.merged_dir is None


def test_trainer_failure_marks_the_run_failed(container: Any, fakes: dict[str, Any]) -> None:
    fakes["trainer"].fail_with = TrainingError("loss is nan")
    with pytest.raises(TrainingError, match="nan"):
        container.run_training().execute(plan_for(container))
    (run,) = fakes["store"].runs.values()
    assert run.state is RunState.FAILED
    assert run.error == "loss is nan"


def test_unexpected_exception_is_recorded_with_its_type(
    container: Any, fakes: dict[str, Any]
) -> None:
    fakes["trainer"].fail_with = RuntimeError("boom")
    with pytest.raises(RuntimeError):
        container.run_training().execute(plan_for(container))
    (run,) = fakes["store"].runs.values()
    assert run.state is RunState.FAILED
    assert run.error == "RuntimeError: boom"


def test_ctrl_c_marks_the_run_interrupted(container: Any, fakes: dict[str, Any]) -> None:
    fakes["trainer"].fail_with = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        container.run_training().execute(plan_for(container))
    (run,) = fakes["store"].runs.values()
    assert run.state is RunState.INTERRUPTED


def test_unknown_model_fails_before_training(container: Any, fakes: dict[str, Any]) -> None:
    with pytest.raises(ModelNotFoundError):
        container.run_training().execute(plan_for(container, model="nope"))
    assert fakes["trainer"].calls == []
    (run,) = fakes["store"].runs.values()
    assert run.state is RunState.FAILED


def test_dataset_with_only_bad_rows_fails_with_a_count(
    container: Any, fakes: dict[str, Any]
) -> None:
    issues = tuple(DatasetIssue("bad.jsonl", i, "invalid JSON") for i in range(1, 4))
    fakes["reader"].datasets["bad.jsonl"] = LoadedDataset((), issues)
    with pytest.raises(DatasetError, match=r"no usable rows \(3 skipped\)"):
        container.run_training().execute(plan_for(container, dataset="bad.jsonl"))
    assert fakes["trainer"].calls == []


def test_explicit_run_id_names_the_run(container: Any, fakes: dict[str, Any]) -> None:
    outcome = container.run_training().execute(plan_for(container), run_id="my-run")
    assert outcome.run.run_id == "my-run"
    assert outcome.run_dir == "/runs/my-run"
