"""RunTraining through the real container, every adapter swapped for a fake."""

from __future__ import annotations

from typing import Any

import pytest

from largeforge.domain import DatasetError, ModelNotFoundError, RunState
from largeforge.domain.errors import ConfigError, TrainingError
from largeforge.domain.formats import DatasetFormat, DatasetSpec
from largeforge.domain.validation import DatasetPolicyError
from tests.conftest import messages_row


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
    first = call["train"][0]
    assert first.trainable_tokens == 3  # "answer", "N." and the end-of-turn token
    assert fakes["encoders"].requests == [("/models/tiny", "all")]
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
    fakes["rows"].datasets["bad.jsonl"] = ["{nope", "[1", "{]"]
    with pytest.raises(DatasetError, match=r"no usable rows \(3 of 3 skipped\)"):
        container.run_training().execute(plan_for(container, datasets=(DatasetSpec("bad.jsonl"),)))
    assert fakes["trainer"].calls == []


def test_too_many_bad_rows_fail_before_the_model_is_touched(
    container: Any, fakes: dict[str, Any]
) -> None:
    good = [messages_row(f"q{i}", f"a{i}") for i in range(18)]
    bad = [{"messages": [{"role": "wizard", "content": "x"}]}, {"instruction": 3}]
    fakes["rows"].datasets["mixed.jsonl"] = good + bad
    plan = plan_for(container, datasets=(DatasetSpec("mixed.jsonl", DatasetFormat.MESSAGES),))
    with pytest.raises(
        DatasetPolicyError, match=r"2 of 20 rows skipped \(10.0% > max_skip_fraction 5.0%\)"
    ) as info:
        container.run_training().execute(plan)
    assert fakes["trainer"].calls == []
    (report,) = info.value.reports
    assert [(i.line, i.kind) for i in report.issues] == [
        (19, "unknown_role"),
        (20, "missing_field"),
    ]
    (run,) = fakes["store"].runs.values()
    assert run.state is RunState.FAILED
    documents = fakes["store"].documents
    (saved,) = documents.values()
    assert saved["datasets"][0]["skipped"] == 2


def test_bad_rows_within_policy_are_skipped_and_reported(
    container: Any, fakes: dict[str, Any]
) -> None:
    rows = [messages_row(f"q{i}", f"a{i}") for i in range(40)] + ["{broken"]
    fakes["rows"].datasets["ok.jsonl"] = rows
    container.run_training().execute(plan_for(container, datasets=(DatasetSpec("ok.jsonl"),)))
    call = fakes["trainer"].calls[0]
    assert len(call["train"]) + len(call["eval"]) == 40
    saved = next(
        d for (_, name), d in fakes["store"].documents.items() if name == "data_report.json"
    )
    assert saved["datasets"][0]["issues"][0]["kind"] == "invalid_json"


def test_datasets_are_mixed_by_count(container: Any, fakes: dict[str, Any]) -> None:
    fakes["rows"].datasets["extra.jsonl"] = [
        {"instruction": f"i{i}", "output": f"o{i}"} for i in range(30)
    ]
    plan = plan_for(
        container,
        datasets=(DatasetSpec("data.jsonl"), DatasetSpec("extra.jsonl", count=5)),
        val_size=0.0,
    )
    container.run_training().execute(plan)
    assert len(fakes["trainer"].calls[0]["train"]) == 25


def test_preference_data_is_refused_for_sft(container: Any, fakes: dict[str, Any]) -> None:
    fakes["rows"].datasets["prefs.jsonl"] = [
        {"prompt": f"q{i}", "chosen": "good", "rejected": f"bad{i}"} for i in range(5)
    ]
    with pytest.raises(DatasetError, match="train with `method: dpo`"):
        container.run_training().execute(
            plan_for(container, datasets=(DatasetSpec("prefs.jsonl"),))
        )


def test_explicit_run_id_names_the_run(container: Any, fakes: dict[str, Any]) -> None:
    outcome = container.run_training().execute(plan_for(container), run_id="my-run")
    assert outcome.run.run_id == "my-run"
    assert outcome.run_dir == "/runs/my-run"


def preference_rows(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]


def test_dpo_trains_on_preference_pairs(container: Any, fakes: dict[str, Any]) -> None:
    fakes["rows"].datasets["prefs.jsonl"] = preference_rows(20)
    plan = plan_for(container, datasets=(DatasetSpec("prefs.jsonl"),), method="dpo")
    outcome = container.run_training().execute(plan)
    (call,) = fakes["preference_trainer"].calls
    assert len(call["train"]) + len(call["eval"]) == 20
    assert fakes["trainer"].calls == []
    assert outcome.run.result.eval_reward_margin_after == 0.5
    assert fakes["merger"].merges  # the DPO adapter is merged like an SFT one


def test_dpo_refuses_sft_only_data_before_training(container: Any, fakes: dict[str, Any]) -> None:
    with pytest.raises(DatasetError, match=r"method 'dpo' needs preference pairs.*20 of 20"):
        container.run_training().execute(plan_for(container, method="dpo"))
    assert fakes["preference_trainer"].calls == []


def test_full_fine_tuning_needs_no_merge(container: Any, fakes: dict[str, Any]) -> None:
    outcome = container.run_training().execute(plan_for(container, adapter="full"))
    assert fakes["merger"].merges == []
    assert outcome.run.merged_dir == outcome.run.result.adapter_dir


def test_batch_larger_than_the_data_names_the_field(container: Any, fakes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"training.batch_size 64 is larger than the 18"):
        container.run_training().execute(plan_for(container, batch_size=64))
    assert fakes["trainer"].calls == []


def interrupted_run(container: Any, fakes: dict[str, Any]) -> str:
    fakes["trainer"].fail_with = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        container.run_training().execute(plan_for(container), run_id="r1")
    fakes["trainer"].fail_with = None
    return "r1"


def test_resume_continues_an_interrupted_run(container: Any, fakes: dict[str, Any]) -> None:
    run_id = interrupted_run(container, fakes)
    outcome = container.run_training().resume(run_id, plan_for(container))
    assert outcome.run.state is RunState.SUCCEEDED
    assert outcome.run.resumes == 1
    assert [s for s, _ in outcome.run.history] == [
        RunState.RUNNING,
        RunState.INTERRUPTED,
        RunState.RUNNING,
        RunState.SUCCEEDED,
    ]
    assert [c["resume"] for c in fakes["trainer"].calls] == [False, True]


def test_resume_after_a_crash_records_the_interruption(
    container: Any, fakes: dict[str, Any]
) -> None:
    from dataclasses import replace

    run_id = interrupted_run(container, fakes)
    store = fakes["store"]
    crashed = replace(store.runs[run_id], state=RunState.RUNNING)  # as left by SIGKILL
    store.runs[run_id] = crashed
    outcome = container.run_training().resume(run_id, plan_for(container))
    assert outcome.run.state is RunState.SUCCEEDED
    assert "interrupted" in store.states[run_id]


def test_resume_refuses_a_changed_config_unless_forced(
    container: Any, fakes: dict[str, Any]
) -> None:
    run_id = interrupted_run(container, fakes)
    changed = plan_for(container, learning_rate=1e-3)
    with pytest.raises(ConfigError, match="configuration changed"):
        container.run_training().resume(run_id, changed)
    assert container.run_training().resume(run_id, changed, force=True).run.resumes == 1


def test_resume_refuses_changed_data_unless_forced(container: Any, fakes: dict[str, Any]) -> None:
    run_id = interrupted_run(container, fakes)
    fakes["rows"].datasets["data.jsonl"].append(messages_row("new question", "new answer"))
    with pytest.raises(ConfigError, match="training data changed"):
        container.run_training().resume(run_id, plan_for(container))
    assert container.run_training().resume(run_id, plan_for(container), force=True).run


def test_a_finished_run_is_not_resumed(container: Any) -> None:
    container.run_training().execute(plan_for(container), run_id="done")
    with pytest.raises(ConfigError, match="already succeeded"):
        container.run_training().resume("done", plan_for(container))


def test_each_method_goes_to_its_own_trainer_from_the_registry(
    container: Any, fakes: dict[str, Any]
) -> None:
    from largeforge.domain.training import TrainingMethod

    container.run_training().execute(plan_for(container, method=TrainingMethod.SFT))
    ((sft_call,), dpo_calls) = fakes["trainer"].calls, fakes["preference_trainer"].calls
    assert dpo_calls == []
    assert sft_call["plan"].method is TrainingMethod.SFT


def test_a_method_without_a_trainer_is_refused_before_a_run_is_created(
    fakes: dict[str, Any],
) -> None:
    from largeforge.domain.training import TrainingMethod
    from tests.conftest import make_container

    container = make_container(fakes)
    container.trainers.override({TrainingMethod.SFT: fakes["trainer"]})
    with pytest.raises(ConfigError, match=r"no trainer for method 'dpo'; available: sft"):
        container.run_training().execute(plan_for(container, method="dpo"))
    assert fakes["store"].runs == {}


def test_the_cli_refuses_a_resume_after_the_config_changed(tmp_path: Any) -> None:
    """`run-training --resume` with a changed run file: exit 2, one line, the run untouched."""
    import json
    import os
    import subprocess
    import sys
    from datetime import UTC, datetime

    from largeforge.adapters.storage.runs import FilesystemRunStore
    from largeforge.application.training import plan_fingerprint
    from largeforge.config import load_run_config
    from largeforge.domain.training import TrainingRun

    original, changed = tmp_path / "run.yaml", tmp_path / "changed.yaml"
    original.write_text("training: {learning_rate: 0.001}\n")
    changed.write_text("training: {learning_rate: 0.002}\n")
    plan = load_run_config(original).to_plan()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    run = TrainingRun("r1", plan, created_at=at, config_fingerprint=plan_fingerprint(plan))
    store = FilesystemRunStore(tmp_path / "runs")
    store.create(run, {})
    store.save(run.start(at).interrupt(at))
    before = (tmp_path / "runs" / "r1" / "run.json").read_text()

    result = subprocess.run(
        [
            *(sys.executable, "-m", "largeforge.entrypoints.cli.main", "run-training"),
            *(str(changed), "--output", str(tmp_path / "runs"), "--name", "r1", "--resume"),
        ],
        env=os.environ | {"LARGEFORGE_LOG_JSON": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: run r1: the configuration changed since the run started "
        "(resume with the same config, or pass --force)"
    ]
    assert (tmp_path / "runs" / "r1" / "run.json").read_text() == before
    assert json.loads(before)["state"] == "interrupted"


def test_the_tokenizer_training_uses_is_recorded_before_training(
    container: Any, fakes: dict[str, Any]
) -> None:
    fakes["trainer"].fail_with = TrainingError("boom")  # recorded even when training fails
    with pytest.raises(TrainingError):
        container.run_training().execute(plan_for(container), run_id="facts-run")
    recorded = fakes["store"].documents[("facts-run", "tokenizer_facts.json")]
    assert recorded == fakes["facts"].default.to_dict()
    assert fakes["facts"].reads == ["/models/tiny"]  # the base model's tokenizer


def test_the_merged_model_is_checked_against_the_record(
    container: Any, fakes: dict[str, Any]
) -> None:
    from dataclasses import replace

    facts = fakes["facts"]
    run_id = "checked"
    merged = f"{fakes['store'].run_dir(run_id)}/merged"
    facts.facts[merged] = replace(facts.default, generation_eos_token_ids=(0,))
    outcome = container.run_training().execute(plan_for(container), run_id=run_id)

    assert outcome.run.state is RunState.SUCCEEDED  # a mismatch warns, it fails nothing
    report = fakes["store"].documents[(run_id, "fidelity.json")]
    assert report["ok"] is False
    (check,) = report["checks"]
    assert check["subject"] == merged
    assert [m["field"] for m in check["mismatches"]] == ["generation_config.eos_token_id"]


def test_an_equal_merged_model_passes_the_check(container: Any, fakes: dict[str, Any]) -> None:
    container.run_training().execute(plan_for(container), run_id="equal")
    assert fakes["store"].documents[("equal", "fidelity.json")]["ok"] is True
    assert fakes["facts"].reads == ["/models/tiny", "/runs/equal/merged"]


def test_a_tokenizer_without_readable_facts_fails_nothing(
    container: Any, fakes: dict[str, Any]
) -> None:
    def unreadable(model_dir: str) -> Any:
        raise ConfigError(f"{model_dir}: cannot load its tokenizer")

    fakes["facts"].read = unreadable
    outcome = container.run_training().execute(plan_for(container), run_id="no-facts")
    assert outcome.run.state is RunState.SUCCEEDED
    names = {name for run_id, name in fakes["store"].documents if run_id == "no-facts"}
    assert names == {"data_report.json"}  # no record, so no check


@pytest.mark.parametrize("resume", [False, True])
def test_the_trainer_refuses_its_plan_before_data_or_a_model_is_touched(
    container: Any, fakes: dict[str, Any], resume: bool
) -> None:
    fakes["trainer"].refuse_with = ConfigError("grpo.rewards[0].function: no module named 'x'")
    use_case = container.run_training()
    run = use_case.resume if resume else use_case.execute
    args = ("run-anything", plan_for(container)) if resume else (plan_for(container),)
    with pytest.raises(ConfigError, match="no module named 'x'"):
        run(*args)
    assert fakes["store"].runs == {}  # no run was recorded: nothing was tried
    assert fakes["encoders"].requests == []  # no tokenizer, no data
    assert fakes["trainer"].calls == []
