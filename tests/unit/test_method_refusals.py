"""Bad options and data of the preference and reward methods: exit 2 with one `error:` line
that names the key, before any model loads (the loader is replaced by one that fails the
test)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from largeforge.entrypoints.cli.main import main
from tests.unit.test_cli import run_cli

ROWS: dict[str, Callable[[int], dict[str, Any]]] = {
    "prompts": lambda i: {"prompt": f"What is {i} + 1?", "reference": str(i + 1)},
    "pairs": lambda i: {"prompt": f"q{i}", "chosen": "good", "rejected": "bad"},
    "sft": lambda i: {
        "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]
    },
    "one_label": lambda i: {"prompt": f"q{i}", "completion": "a", "label": True},
    "unpaired": lambda i: {"prompt": f"q{i}", "completion": "a", "label": i % 2 == 0},
}


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from largeforge.adapters.trl import stack

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the bad option was refused")

    monkeypatch.setattr(stack, "load_model_and_tokenizer", refuse)


CASES = [
    (
        "grpo: {rewards: [{kind: nope}]}",
        "prompts",
        "grpo.rewards[0].kind: unknown reward 'nope'",
    ),
    (
        "grpo: {rewards: [{kind: python, function: 'no_such_module:score'}]}",
        "prompts",
        "grpo.rewards[0].function: cannot import 'no_such_module:score': "
        "no module named 'no_such_module'",
    ),
    (
        "grpo: {rewards: [{kind: python, function: 'lf_user_rewards:missing'}]}",
        "prompts",
        "grpo.rewards[0].function: module 'lf_user_rewards' has no 'missing'",
    ),
    (
        "grpo: {rewards: [{kind: python, function: 'lf_user_rewards:narrow'}]}",
        "prompts",
        "grpo.rewards[0].function: narrow cannot take 'prompts': give it **kwargs",
    ),
    (
        "grpo: {rewards: [{kind: python, function: 'lf_user_rewards:needs_more'}]}",
        "prompts",
        "grpo.rewards[0].function: needs_more needs 'tokenizer', which is not passed",
    ),
    ("grpo: {rewards: []}", "prompts", "grpo.rewards: GRPO needs at least one reward"),
    ("grpo: {rewards: [{kind: numeric_answer}]}", "pairs", "prompt: method 'grpo' needs prompts"),
    (
        "grpo: {num_generation: 4}",
        "prompts",
        "unknown key 'grpo.num_generation' (did you mean 'grpo.num_generations'?)",
    ),
    (
        "grpo: {num_generations: 3, rewards: [{kind: numeric_answer}]}",
        "prompts",
        "training.batch_size: batch_size x gradient_accumulation_steps (4 completions a step) "
        "must be a multiple of grpo.num_generations (3)",
    ),
]
KTO_CASES = [
    ("", "sft", "label: method 'kto' needs labelled completions (prompt/completion/label)"),
    ("", "one_label", "label: method 'kto' needs both desirable (label: true) and undesirable"),
    ("kto: {loss_type: nope}", "unpaired", "'kto.loss_type': input should be 'kto'"),
    ("training: {batch_size: 1}", "unpaired", "training.batch_size: KTO estimates its KL term"),
]


def write_case(root: Path, method: str, group: str, data: str, model: Path) -> Path:
    """A run file of `method` with `group` on 12 rows of kind `data`, and a module of user
    rewards with wrong signatures in `root` (the working directory)."""
    (root / "lf_user_rewards.py").write_text(
        "def narrow(completions):\n    return [0.0] * len(completions)\n\n"
        "def needs_more(completions, tokenizer, **kwargs):\n    return [0.0] * len(completions)\n"
    )
    dataset = root / "data.jsonl"
    dataset.write_text("".join(json.dumps(ROWS[data](i)) + "\n" for i in range(12)))
    config = root / "run.yaml"
    config.write_text(f"model: {model}\nmethod: {method}\ndataset: {dataset}\n{group}\n")
    return config


@pytest.mark.parametrize(
    ("method", "group", "data", "message"),
    [("grpo", *case) for case in CASES] + [("kto", *case) for case in KTO_CASES],
)
def test_bad_method_options_and_data_exit_2_naming_the_key_before_a_model_loads(
    method: str,
    group: str,
    data: str,
    message: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_model_load: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_case(tmp_path, method, group, data, tiny_model_dir)
    code = main(["run-training", str(config), "--output", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    assert message in errors[0], errors[0]


def test_an_unknown_reward_function_is_refused_by_the_real_command(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = write_case(tmp_path, "grpo", CASES[1][0], "prompts", tiny_model_dir)
    result = run_cli("run-training", str(config), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert [x for x in result.stderr.splitlines() if x.startswith("error:")] == [
        f"error: {CASES[1][2]}"
    ]
    assert "trainer_ready" not in result.stderr
    assert "Loading weights" not in result.stderr
