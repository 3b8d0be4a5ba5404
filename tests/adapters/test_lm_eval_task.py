"""LmEvalTask: lm-evaluation-harness tasks scored in-process, their errors as one line.

The scoring tests run the real harness on the tiny random model (chance-level accuracy); the
error tests use the real task index where that is cheap (it is built once per process) and
fakes where the failure needs the network.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval")

from largeforge.adapters.lm_eval import BUNDLED_TASKS, LmEvalTask, bundled_task_dir
from largeforge.adapters.lm_eval import task as task_module
from largeforge.adapters.lm_eval.results import scores_from_results
from largeforge.domain.errors import EvaluationError
from largeforge.domain.evaluation import ModelVariant, VariantKind

FACTS = bundled_task_dir() / "largeforge_facts.jsonl"


@pytest.fixture(autouse=True)
def restore_offline_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """LmEvalTask turns the hub libraries' offline mode on when the hub does not answer:
    undo that after each test, so other tests see the process as it was."""
    restore_offline_mode(monkeypatch)


def restore_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        old = os.environ.get(name)
        monkeypatch.setenv(name, old or "")  # records the old state, restored afterwards
        if old is None:
            monkeypatch.delenv(name)
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE
    )
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setattr(datasets.config, name, getattr(datasets.config, name))


def documents() -> int:
    return len(FACTS.read_text().splitlines())


def variant(model_dir: Path, adapter_dir: Path | None = None) -> ModelVariant:
    kind = VariantKind.ADAPTER if adapter_dir else VariantKind.MODEL
    return ModelVariant("tiny", kind, str(model_dir), str(adapter_dir) if adapter_dir else None)


# --- the bundled task on a real (tiny) model -------------------------------------------------


def test_bundled_task_scores_every_metric_with_stderr_and_n(tiny_model_dir: Path) -> None:
    scores = LmEvalTask("largeforge_facts").evaluate(variant(tiny_model_dir))
    assert [(s.task, s.metric) for s in scores] == [
        ("lm:largeforge_facts", "acc"),
        ("lm:largeforge_facts", "acc_norm"),
    ]
    for score in scores:
        assert 0.0 <= score.value <= 1.0
        assert score.n == documents() >= 40
        assert score.higher_is_better
        # a mean of 0/1 outcomes: its standard error is sqrt(p(1-p)/(n-1))
        p = score.value
        assert score.stderr == pytest.approx(math.sqrt(p * (1 - p) / (score.n - 1)))
        assert score.low is not None
        assert score.high is not None
        assert score.low < score.value < score.high


def test_limit_scores_that_many_documents_and_the_model_is_freed(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[weakref.ref[Any]] = []
    real = task_module._load_model

    def load(*args: Any) -> Any:
        lm = real(*args)
        loaded.append(weakref.ref(lm.model))
        return lm

    monkeypatch.setattr(task_module, "_load_model", load)
    task = LmEvalTask("largeforge_facts", limit=6)
    scores = task.evaluate(variant(tiny_model_dir))
    assert {s.n for s in scores} == {6}
    assert len(loaded) == 1
    assert loaded[0]() is None  # the task lives on; nothing holds the weights it scored


def test_an_adapter_variant_is_scored_with_its_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.support import build_tiny_adapter

    adapter = build_tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    task = LmEvalTask("largeforge_facts", apply_chat_template=False)
    base = {s.metric: s.value for s in task.evaluate(variant(tiny_model_dir))}
    tuned = {s.metric: s.value for s in task.evaluate(variant(tiny_model_dir, adapter))}
    assert base != tuned  # the adapter's random B moves the log-likelihoods


def test_an_adapter_brings_its_own_tokenizer_when_training_saved_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lm_eval.models.huggingface

    made: list[dict[str, Any]] = []
    monkeypatch.setattr(lm_eval.models.huggingface, "HFLM", lambda **kw: made.append(kw))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    task_module._load_model(variant(tmp_path / "base", adapter), "cpu", 4)
    (adapter / "tokenizer_config.json").write_text("{}")
    task_module._load_model(variant(tmp_path / "base", adapter), "cpu", 4)
    task_module._load_model(variant(tmp_path / "base"), "cpu", 4)
    assert [(m["pretrained"], m["peft"], m["tokenizer"]) for m in made] == [
        (str(tmp_path / "base"), str(adapter), str(tmp_path / "base")),
        (str(tmp_path / "base"), str(adapter), str(adapter)),
        (str(tmp_path / "base"), None, str(tmp_path / "base")),
    ]
    assert {(m["dtype"], m["device"], m["batch_size"]) for m in made} == {("float32", "cpu", 4)}


# --- the chat-template decision ---------------------------------------------------------------


class FakeTokenizer:
    def __init__(self, chat_template: str | None) -> None:
        self.chat_template = chat_template


class FakeLM:
    def __init__(self, chat_template: str | None) -> None:
        self.tokenizer = FakeTokenizer(chat_template)


RESULTS = {
    "results": {"largeforge_facts": {"alias": "largeforge_facts", "acc,none": 0.5}},
    "n-samples": {"largeforge_facts": {"original": 48, "effective": 48}},
    "higher_is_better": {"largeforge_facts": {"acc": True}},
}


@pytest.mark.parametrize(
    ("template", "option", "expected"),
    [
        ("{{ messages }}", None, True),  # a chat model: on by default
        (None, None, False),  # a base model without a template: off
        ("{{ messages }}", False, False),  # told otherwise
        (None, True, True),
    ],
)
def test_chat_template_is_applied_for_chat_models_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, template: str | None, option: bool | None, expected: bool
) -> None:
    import lm_eval

    calls: list[dict[str, Any]] = []

    def simple_evaluate(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return RESULTS

    monkeypatch.setattr(lm_eval, "simple_evaluate", simple_evaluate)
    monkeypatch.setattr(task_module, "_load_model", lambda *a: FakeLM(template))
    task = LmEvalTask("largeforge_facts", apply_chat_template=option)
    (score,) = task.evaluate(ModelVariant("m", VariantKind.MODEL, "/nowhere"))
    assert score.value == 0.5
    assert calls[0]["apply_chat_template"] is expected
    assert calls[0]["fewshot_as_multiturn"] is expected  # as `lm_eval --apply_chat_template`


# --- harness results as scores -----------------------------------------------------------------


def test_results_become_scores_without_alias_stderr_keys_or_the_none_filter() -> None:
    results = {
        "results": {
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": 0.25,
                "exact_match_stderr,strict-match": 0.05,
                "exact_match,flexible-extract": 0.3,
                "exact_match_stderr,flexible-extract": "N/A",
            },
            "wikitext": {"word_perplexity,none": 12.5, "word_perplexity_stderr,none": "N/A"},
        },
        "n-samples": {"gsm8k": {"effective": 20}, "wikitext": {"effective": 7}},
        "higher_is_better": {
            "gsm8k": {"exact_match": True},
            "wikitext": {"word_perplexity": False},
        },
    }
    scores = scores_from_results(results)
    assert [(s.task, s.metric, s.value, s.stderr, s.n) for s in scores] == [
        ("lm:gsm8k", "exact_match,strict-match", 0.25, 0.05, 20),
        ("lm:gsm8k", "exact_match,flexible-extract", 0.3, None, 20),
        ("lm:wikitext", "word_perplexity", 12.5, None, 7),
    ]
    assert scores[0].low == pytest.approx(0.25 - 1.959963984540054 * 0.05)
    assert scores[2].higher_is_better is False
    assert scores[2].low is None


def test_a_group_reports_its_aggregate_or_else_its_subtasks() -> None:
    subtasks = {
        "a": {"alias": " - a", "acc,none": 1.0, "acc_stderr,none": 0.0},
        "b": {"alias": " - b", "acc,none": 0.0, "acc_stderr,none": 0.0},
    }
    counts = {"a": {"effective": 3}, "b": {"effective": 5}}
    aggregated = {
        "results": {"g": {"alias": "g", "acc,none": 0.375, "acc_stderr,none": 0.2}, **subtasks},
        "group_subtasks": {"g": ["a", "b"]},
        "n-samples": counts,
    }
    (score,) = scores_from_results(aggregated)
    assert (score.task, score.metric, score.value, score.n) == ("lm:g", "acc", 0.375, 8)
    plain = {
        "results": {"g": {"alias": "g"}, **subtasks},
        "group_subtasks": {"g": ["a", "b"]},
        "n-samples": counts,
    }
    assert [(s.task, s.n) for s in scores_from_results(plain)] == [("lm:a", 3), ("lm:b", 5)]


# --- errors, before any model loads -------------------------------------------------------------


def test_an_unknown_task_name_is_refused_with_the_closest_names() -> None:
    with pytest.raises(EvaluationError) as caught:
        LmEvalTask("hellaswg").validate()
    message = str(caught.value)
    assert message.startswith("unknown lm-evaluation-harness task 'hellaswg' (did you mean ")
    assert "'hellaswag'" in message
    assert "largeforge_facts" in message  # the bundled, offline task is named
    assert "\n" not in message


def test_a_missing_task_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=r"task file '.*nope\.yaml' does not exist"):
        LmEvalTask(str(tmp_path / "nope.yaml")).validate()


def test_a_task_yaml_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: broken\ndoc_to_text: [unclosed\n")
    with pytest.raises(EvaluationError, match=r"broken\.yaml' does not parse: .*line 3") as caught:
        LmEvalTask(str(broken)).validate()
    assert "\n" not in str(caught.value)
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("dataset_path: json\n")
    with pytest.raises(EvaluationError, match=r"names no 'task'"):
        LmEvalTask(str(nameless)).validate()


def test_a_task_yaml_with_local_data_is_scored_like_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = (bundled_task_dir() / BUNDLED_TASKS["largeforge_facts"]).read_text()
    own = tmp_path / "own.yaml"
    own.write_text(
        spec.replace("task: largeforge_facts", "task: own_facts").replace(
            "test: largeforge_facts.jsonl", f"test: {FACTS}"
        )
    )
    task = LmEvalTask(str(own))
    task.validate()  # loads the documents, no model
    missing = tmp_path / "missing.yaml"
    missing.write_text(spec.replace("test: largeforge_facts.jsonl", f"test: {tmp_path}/x.jsonl"))
    with pytest.raises(EvaluationError, match=r"cannot load its data: "):
        LmEvalTask(str(missing)).validate()


def test_a_dataset_on_the_hub_is_refused_naming_the_task_and_dataset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Manager:
        def load(self, specs: list[Any]) -> dict[str, Any]:
            try:
                raise OSError("LocalEntryNotFoundError")
            except OSError as inner:  # how `datasets` reports it
                raise ConnectionError("Couldn't reach 'someone/data' on the Hub") from inner

    monkeypatch.setattr(task_module, "_task_manager", lambda defaults: Manager())
    monkeypatch.setattr(task_module, "resolve_task", lambda t: task_module._Resolved(t, True, ()))
    with pytest.raises(EvaluationError) as caught:
        LmEvalTask("remote_task").validate()
    message = str(caught.value)
    assert message.startswith(
        "lm-evaluation-harness task 'remote_task' needs the dataset 'someone/data' from the "
        "Hugging Face hub"
    )
    assert "lm:FILE.yaml" in message
    assert "'largeforge_facts'" in message


def test_a_real_hub_task_fails_at_once_when_the_hub_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from largeforge.adapters.models.resolver import hub_reachable

    if hub_reachable(3.0):
        pytest.skip("the hub is reachable here: arc_easy would download")
    task_module._task_manager(True)  # the index (seconds, shared with the other tests)
    started = time.monotonic()
    with pytest.raises(EvaluationError) as caught:
        LmEvalTask("arc_easy").validate()
    assert time.monotonic() - started < 15  # no network retries
    assert str(caught.value).startswith(
        "lm-evaluation-harness task 'arc_easy' needs the dataset 'allenai/ai2_arc/ARC-Easy' "
        "from the Hugging Face hub, which is not reachable (offline)"
    )


def test_offline_mode_is_set_when_the_hub_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import datasets.config
    import huggingface_hub.constants

    from largeforge.adapters.models import resolver

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)  # the fixture restores them
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(resolver, "hub_reachable", lambda timeout=3.0: True)
    task_module._offline_when_hub_unreachable()
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # reachable: left alone
    monkeypatch.setattr(resolver, "hub_reachable", lambda timeout=3.0: False)
    task_module._offline_when_hub_unreachable()
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert datasets.config.HF_HUB_OFFLINE is True
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"


def test_an_empty_task_name_is_refused() -> None:
    with pytest.raises(EvaluationError, match="empty task name"):
        LmEvalTask("  ")
