"""FilesystemRunStore: run.json round-trips, metrics append, `latest` points at the newest run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from largeforge.adapters.storage.runs import FilesystemRunStore, run_from_dict, run_to_dict
from largeforge.domain import (
    LargeForgeError,
    LoraSpec,
    StepMetrics,
    TrainingPlan,
    TrainingResult,
    TrainingRun,
)
from largeforge.domain.formats import DatasetSpec
from largeforge.domain.training import AdapterKind, DpoOptions, TrainingMethod

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def finished_run(run_id: str = "run-1") -> TrainingRun:
    plan = TrainingPlan(
        model="m", datasets=(DatasetSpec("d"),), lora=LoraSpec(target_modules=("q_proj", "v_proj"))
    )
    run = TrainingRun(run_id, plan, created_at=T0).start(T0)
    return run.succeed(T0, TrainingResult("a", 3, 1.0, 2.0, 1.5, 10, 2), "merged")


def test_run_round_trips_through_json() -> None:
    run = finished_run()
    assert run_from_dict(json.loads(json.dumps(run_to_dict(run)))) == run


def test_store_writes_config_state_and_metrics(tmp_path: Path) -> None:
    store = FilesystemRunStore(tmp_path)
    run = TrainingRun("run-1", TrainingPlan(model="m", datasets=(DatasetSpec("d"),)), created_at=T0)
    directory = Path(store.create(run, {"model": "m", "training": {"max_steps": 3}}))
    assert (directory / "config.yaml").read_text().startswith("model: m")
    assert json.loads((directory / "run.json").read_text())["state"] == "pending"
    store.append_metrics("run-1", StepMetrics(step=1, loss=2.5, learning_rate=1e-4))
    store.append_metrics("run-1", StepMetrics(step=1, eval_loss=2.0))
    lines = (directory / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "loss": 2.5, "learning_rate": 1e-4},
        {"step": 1, "eval_loss": 2.0},
    ]
    store.save(finished_run())
    assert store.load("run-1").state.value == "succeeded"
    assert (tmp_path / "latest").resolve() == directory.resolve()


def test_latest_moves_to_the_newest_run(tmp_path: Path) -> None:
    store = FilesystemRunStore(tmp_path)
    for name in ("a", "b"):
        store.create(TrainingRun(name, TrainingPlan(model="m", datasets=(DatasetSpec("d"),))), {})
    assert (tmp_path / "latest").resolve() == (tmp_path / "b").resolve()


def test_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    store = FilesystemRunStore(tmp_path)
    run = TrainingRun("same", TrainingPlan(model="m", datasets=(DatasetSpec("d"),)))
    store.create(run, {})
    with pytest.raises(LargeForgeError, match="already exists"):
        store.create(run, {})


def test_report_has_the_numbers_and_a_loss_curve(tmp_path: Path) -> None:
    store = FilesystemRunStore(tmp_path)
    run = finished_run()
    store.create(run, {})
    for step, loss in [(1, 3.0), (2, 2.5), (3, 2.0)]:
        store.append_metrics(run.run_id, StepMetrics(step=step, loss=loss, tokens_per_second=100.0))
    store.append_metrics(run.run_id, StepMetrics(step=3, eval_loss=1.5))
    report = Path(store.write_report(run))
    text = report.read_text()
    assert "state: **succeeded**" in text
    assert "eval loss: 2.0000 -> 1.5000" in text
    assert "tokens/s: median 100" in text
    assert "![loss curve](loss.png)" in text
    png = (tmp_path / run.run_id / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_a_dpo_plan_round_trips_with_its_option_group() -> None:
    plan = TrainingPlan(
        model="m",
        datasets=(DatasetSpec("d"),),
        method=TrainingMethod.DPO,
        adapter=AdapterKind.FULL,
        dpo=DpoOptions(beta=0.3, loss_type="ipo"),
    )
    run = TrainingRun("run-1", plan, created_at=T0)
    data = json.loads(json.dumps(run_to_dict(run)))
    assert (data["plan"]["method"], data["plan"]["dpo"]["loss_type"]) == ("dpo", "ipo")
    loaded = run_from_dict(data)
    assert loaded == run
    assert loaded.plan.method is TrainingMethod.DPO
    assert loaded.plan.adapter is AdapterKind.FULL


def test_a_run_json_from_before_the_dpo_group_still_loads() -> None:
    data = json.loads(json.dumps(run_to_dict(finished_run())))
    del data["plan"]["dpo"]
    data["plan"] |= {"method": "dpo", "dpo_beta": 0.25, "dpo_precompute_ref_log_probs": True}
    plan = run_from_dict(data).plan
    assert plan.dpo == DpoOptions(beta=0.25, precompute_ref_log_probs=True)
    assert plan.method is TrainingMethod.DPO


def test_each_method_option_group_round_trips_with_its_run() -> None:
    from largeforge.domain.method_options import (
        GrpoOptions,
        KtoOptions,
        OrpoOptions,
        SimpoOptions,
    )
    from largeforge.domain.rewards import reward_specs

    rewards = reward_specs(
        [
            {"kind": "numeric_answer", "answer_pattern": "<a>(.*)</a>", "weight": 2.0},
            {"kind": "json_schema", "schema": {"type": "object", "required": ["x"]}},
            {"kind": "python", "function": "pkg.mod:score", "name": "mine"},
        ]
    )
    plan = TrainingPlan(
        model="m",
        datasets=(DatasetSpec("d"),),
        method=TrainingMethod.GRPO,
        batch_size=8,
        kto=KtoOptions(0.2, "apo_zero_unpaired", 1.2, 0.8),
        orpo=OrpoOptions(0.3),
        simpo=SimpoOptions(2.5, 0.3, 0.1),
        grpo=GrpoOptions(rewards, 8, 32, 0.8, 0.95, 0.04, 0.25, "grpo", "none"),
    )
    run = TrainingRun("run-1", plan, created_at=T0)
    loaded = run_from_dict(json.loads(json.dumps(run_to_dict(run))))
    assert loaded == run
    assert loaded.plan.grpo.rewards[0].kind.value == "numeric_answer"


def test_a_reward_run_reports_its_reward_curves(tmp_path: Path) -> None:
    store = FilesystemRunStore(tmp_path)
    run = finished_run()
    store.create(run, {})
    for step, reward in [(1, 0.1), (2, 0.3), (3, 0.5)]:
        store.append_metrics(
            run.run_id,
            StepMetrics(
                step=step,
                loss=0.1,
                reward=reward,
                reward_std=0.2,
                kl=0.01 * step,
                rewards=(("numeric_answer", reward),),
            ),
        )
    text = Path(store.write_report(run)).read_text()
    assert "![rewards](rewards.png)" in text
    assert (tmp_path / run.run_id / "rewards.png").read_bytes().startswith(b"\x89PNG")
    lines = (tmp_path / run.run_id / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["reward/numeric_answer"] == 0.5
    sft = finished_run("run-2")
    store.create(sft, {})
    store.append_metrics(sft.run_id, StepMetrics(step=1, loss=1.0))
    assert "rewards.png" not in Path(store.write_report(sft)).read_text()
