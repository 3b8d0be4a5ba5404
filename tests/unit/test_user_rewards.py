"""The user's reward functions (`module:function`): imported and checked before a model loads,
called with the completions' text, and their answers checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from largeforge.adapters.system.user_functions import check_keywords, import_function
from largeforge.adapters.trl.grpo_rewards import USER_KEYWORDS, reward_functions, text_of
from largeforge.domain.errors import ConfigError, TrainingError
from largeforge.domain.rewards import reward_spec

MODULE = """
def exact(completions, prompts, reference, **kwargs):
    return [float(c.strip() == r) for c, r in zip(completions, reference)]

def columns(completions, **kwargs):
    return [float(len(kwargs)) for _ in completions]

def named(completions, prompts, reference):
    return [1.0 for _ in completions]

def short(completions, **kwargs):
    return [1.0]

def words(completions, **kwargs):
    return ["high" for _ in completions]

def maybe(completions, **kwargs):
    return [None for _ in completions]

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "lf_rewards_under_test.py").write_text(MODULE)
    (tmp_path / "lf_broken_rewards.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.chdir(tmp_path)
    return "lf_rewards_under_test"


def python_reward(function: str) -> Any:
    return reward_spec({"kind": "python", "function": function})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("lf_nope_module:f", "cannot import 'lf_nope_module:f': no module named 'lf_nope_module'"),
        ("lf_rewards_under_test:absent", "module 'lf_rewards_under_test' has no 'absent'"),
        ("lf_rewards_under_test:NOT_A_FUNCTION", "is a int, not a function"),
        ("lf_broken_rewards:f", "importing 'lf_broken_rewards' failed: RuntimeError: no config"),
    ],
)
def test_an_import_that_fails_is_one_line_naming_the_key(
    module: str, path: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=r"^grpo\.rewards\[0\]\.function: ") as caught:
        import_function(path, "grpo.rewards[0].function")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_signatures_are_checked_against_the_keywords_they_get(module: str) -> None:
    check_keywords(import_function(f"{module}:exact", "k"), USER_KEYWORDS, "k")
    check_keywords(import_function(f"{module}:named", "k"), USER_KEYWORDS, "k")
    with pytest.raises(ConfigError, match="cannot take 'prompts': give it \\*\\*kwargs"):
        check_keywords(lambda completions: [], USER_KEYWORDS, "k")
    with pytest.raises(ConfigError, match="needs 'model', which is not passed"):
        check_keywords(lambda completions, model, **kw: [], USER_KEYWORDS, "k")
    with pytest.raises(ConfigError, match="takes 'completions' by position only"):
        check_keywords(lambda completions, /, **kw: [], USER_KEYWORDS, "k")


def test_a_user_reward_gets_texts_references_and_with_kwargs_the_other_columns(
    module: str,
) -> None:
    exact, columns, named = reward_functions(
        [python_reward(f"{module}:{name}") for name in ("exact", "columns", "named")]
    )
    completions = [
        [{"role": "assistant", "content": " 4"}],
        [{"role": "assistant", "content": "5"}],
    ]
    kwargs: dict[str, Any] = {
        "prompts": [[{"role": "user", "content": "2+2?"}]] * 2,
        "completions": completions,
        "reference": ["4", "4"],
        "completion_ids": [[1], [2]],
        "trainer_state": object(),
        "id": ["a", "b"],
    }
    assert exact(**kwargs) == [1.0, 0.0]
    assert columns(**kwargs) == [3.0, 3.0]  # prompts, reference and id; not TRL's own
    assert named(**kwargs) == [1.0, 1.0]  # no **kwargs: no other columns
    assert exact.__name__ == "exact"


@pytest.mark.parametrize(
    ("name", "message"),
    [("short", "returned 1 values for 2 completions"), ("words", "'high' is not a number")],
)
def test_a_user_reward_that_answers_wrongly_names_the_function(
    module: str, name: str, message: str
) -> None:
    (reward,) = reward_functions([python_reward(f"{module}:{name}")])
    with pytest.raises(TrainingError, match=message):
        reward(prompts=[[], []], completions=["a", "b"], reference=[None, None])


def test_none_means_no_reward_for_that_completion(module: str) -> None:
    (reward,) = reward_functions([python_reward(f"{module}:maybe")])
    assert reward(prompts=[[]], completions=["a"], reference=[None]) == [None]


def test_builtin_rewards_score_the_text_of_conversational_completions() -> None:
    numeric, fmt = reward_functions(
        [
            reward_spec({"kind": "numeric_answer"}),
            reward_spec({"kind": "format", "pattern": "^-?\\d+$", "name": "only_number"}),
        ]
    )
    completions = [
        [{"role": "assistant", "content": "7"}],
        [{"role": "assistant", "content": "It is 8"}],
    ]
    assert numeric(completions=completions, reference=["7", "8"]) == [1.0, 1.0]
    assert fmt(completions=completions, reference=["7", "8"]) == [1.0, 0.0]
    assert numeric(completions=completions) == [0.0, 0.0]  # no reference column
    assert (numeric.__name__, fmt.__name__) == ("numeric_answer", "only_number")
    assert text_of("plain") == "plain"


def test_the_tool_call_reward_parses_answers_as_serving_does() -> None:
    (reward,) = reward_functions([reward_spec({"kind": "tool_call"})], tool_format="hermes")
    call = '<tool_call>\n{"name": "get_time", "arguments": {"city": "Oslo"}}\n</tool_call>'
    other = '<tool_call>\n{"name": "get_time", "arguments": {"city": "Rome"}}\n</tool_call>'
    unknown = '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'
    expected = '[{"name": "get_time", "arguments": {"city": "Oslo"}}]'
    scores = reward(
        completions=[call, other, "It is noon.", unknown, "No call needed."],
        reference=[expected, expected, expected, "[]", "[]"],
        tool_names=[["get_time"]] * 5,
    )
    # Right call; right function, wrong argument; no call; a function the prompt never
    # offered is not a call (so no call was made, which was right); no call, right.
    assert scores == [1.0, 0.5, 0.0, 1.0, 1.0]
    assert reward.__name__ == "tool_call"
