"""Every CLI command, given bad input of each kind it takes (missing files, wrong formats,
empty files, unknown options, bad values): exit 2 and one `error:` line naming the problem,
never a traceback. In process for every case, and a sample as real subprocesses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cyclopts import App

from largeforge.entrypoints.cli.main import app, main
from tests.unit.test_cli import run_cli

COMMANDS = (
    ("run-training",),
    ("serve",),
    ("merge", "RUN"),
    ("data", "validate", "F"),
    ("data", "preview", "F", "--model", "M"),
    ("data", "convert", "F", "--to", "messages", "-o", "OUT"),
    ("data", "generate", "sft", "-o", "OUT"),
    ("data", "generate", "preferences", "-o", "OUT"),
    ("data", "generate", "tools", "--tools", "T", "-o", "OUT"),
    ("quantize", "M", "--method", "awq", "-o", "OUT"),
    ("eval", "RUN"),
    ("route", "serve", "CFG"),
    ("route", "explain", "CFG", "query"),
    ("route", "eval", "CFG", "LABELLED"),
    ("route", "calibrate", "CFG", "LABELLED", "-o", "OUT"),
    ("doctor",),
)


class Files:
    """Bad inputs of each kind, written once per test into `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.missing = str(root / "missing.jsonl")
        self.missing_yaml = str(root / "missing.yaml")
        self.empty_jsonl = self.write("empty.jsonl", "")
        self.empty_yaml = self.write("empty.yaml", "")
        self.blank_lines = self.write("blank.jsonl", "\n\n\n")
        self.not_json = self.write("notjson.jsonl", "{oops\n[1, 2\n")
        self.wrong_suffix = self.write("data.txt", "hello\n")
        self.undetectable = self.write("odd.jsonl", json.dumps({"foo": 1}) + "\n")
        self.text_rows = self.write("text.jsonl", json.dumps({"text": "just text"}) + "\n")
        self.bad_yaml = self.write("bad.yaml", "experts: [unclosed\n")
        self.list_yaml = self.write("list.yaml", "- 1\n- 2\n")
        self.unknown_key = self.write("unknown.yaml", "no_such_key: 1\n")
        self.run_dir = root / "run"
        self.run_dir.mkdir()
        (self.run_dir / "run.json").write_text('{"plan": {}}')
        self.not_a_model = root / "not-a-model"
        self.not_a_model.mkdir()
        self.out = str(root / "written.jsonl")  # what data commands would write
        self.out_dir = str(root / "quantized")  # what quantize would write
        self.out_yaml = str(root / "calibrated.yaml")

    def write(self, name: str, text: str) -> str:
        path = self.root / name
        path.write_text(text)
        return str(path)


def bad_inputs(f: Files, router_yaml: str, labelled: str) -> list[list[str]]:
    """For every command: the bad inputs it can be given (each must exit 2, one error line)."""
    gen_sft = ["data", "generate", "sft", "-o", f.out, "--seeds"]
    gen_pref = ["data", "generate", "preferences", "-o", f.out, "--prompts"]
    gen_tools = ["data", "generate", "tools", "-o", f.out, "--tools"]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    unchecked = {"type": "function", "function": {"name": "f", "parameters": {"foo": 1}}}
    convert = ["data", "convert", "--to", "messages", "-o", f.out]
    quantize = ["quantize", "--method", "awq", "-o", f.out_dir]
    return [
        # run-training: missing, empty, wrong-format run files and datasets; bad values
        ["run-training", f.missing_yaml],
        ["run-training", f.bad_yaml],
        ["run-training", f.list_yaml],
        ["run-training", f.unknown_key],
        ["run-training", "--dataset", f.missing, "--model", str(f.not_a_model)],
        ["run-training", "--model", f.missing],
        ["run-training", "--resume", "--output", f.out_dir],
        ["run-training", "--nproc", "0"],
        # serve: a model that is not there or not a model, bad adapters, bad values
        ["serve", "--model", f.missing],
        ["serve", "--model", str(f.not_a_model)],
        ["serve", "--lora", "nameonly"],
        ["serve", "--lora", f"a={f.missing}"],
        ["serve", "--port", "-1"],
        ["serve", "--max-num-seqs", "0"],
        ["serve", "--embedding-model", f.missing],
        ["serve", "--embedding-model", str(f.not_a_model)],
        # merge: not a run, a corrupt run record
        ["merge", f.missing],
        ["merge", str(f.not_a_model)],
        ["merge", str(f.run_dir)],
        # data validate / preview / convert: missing, empty, undetectable, wrong type files
        ["data", "validate", f.missing],
        ["data", "validate", f.empty_jsonl],
        ["data", "validate", f.blank_lines],
        ["data", "validate", f.wrong_suffix],
        ["data", "validate", f.undetectable],
        ["data", "validate", f.text_rows, "--max-skip-fraction", "2"],
        ["data", "preview", f.missing, "--model", str(f.not_a_model)],
        ["data", "preview", f.text_rows, "--model", f.missing],
        ["data", "convert", f.missing, *convert[2:]],
        ["data", "convert", f.wrong_suffix, *convert[2:]],
        ["data", "convert", f.empty_jsonl, *convert[2:]],
        # data generate: missing, empty, undecodable and prompt-less files; bad values
        [*gen_sft, f.missing],
        [*gen_sft, f.empty_jsonl],
        [*gen_sft, f.not_json],
        [*gen_sft, f.text_rows],
        [*gen_sft, f.wrong_suffix],
        [*gen_sft, f.text_rows, "--count", "0"],
        [*gen_pref, f.missing],
        [*gen_pref, f.empty_jsonl],
        [*gen_pref, f.not_json],
        [*gen_pref, f.undetectable],
        [*gen_pref, f.text_rows, "--samples", "1"],
        [*gen_tools, f.missing],
        [*gen_tools, f.not_json],
        [*gen_tools, f.write("unchecked.json", json.dumps([unchecked]))],
        [*gen_tools, f.write("tools.json", json.dumps([tool])), "--count", "0"],
        # quantize: a model that is not there, not a model; missing/empty calibration
        ["quantize", f.missing, *quantize[1:]],
        ["quantize", str(f.not_a_model), *quantize[1:]],
        ["quantize", str(f.not_a_model), *quantize[1:], "--calibration", f.missing],
        # eval: not a run or a model, a corrupt run record, tasks and variants that cannot be
        ["eval", f.missing],
        ["eval", str(f.not_a_model)],
        ["eval", str(f.run_dir)],
        ["eval", f.missing, "--tasks", "lm:"],
        ["eval", str(f.run_dir), "--tasks", "generate:"],
        ["eval", str(f.run_dir), "--tasks", ","],
        # route: missing, empty, invalid and wrong-shape configs; missing/bad labelled files
        *(
            [*cmd, cfg, *rest]
            for cmd, rest in (
                (["route", "serve"], []),
                (["route", "explain"], ["query"]),
                (["route", "eval"], [labelled]),
                (["route", "calibrate"], [labelled, "-o", f.out_yaml]),
            )
            for cfg in (f.missing_yaml, f.empty_yaml, f.bad_yaml, f.list_yaml, f.unknown_key)
        ),
        ["route", "eval", router_yaml, f.missing],
        ["route", "eval", router_yaml, f.not_json],
        ["route", "eval", router_yaml, f.empty_jsonl],
        ["route", "eval", router_yaml, f.write("labels.jsonl", '{"query": "q", "expert": "x"}\n')],
        ["route", "calibrate", router_yaml, f.undetectable, "-o", f.out_yaml],
    ]


def unknown_options() -> list[list[str]]:
    """Every command with an option it does not have, and every group with no command."""
    return [
        *([*command, "--no-such-option"] for command in COMMANDS),
        ["no-such-command"],
        ["data", "no-such-command"],
    ]


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Files:
    monkeypatch.chdir(tmp_path)  # commands that write runs/ write them here, not in the checkout
    return Files(tmp_path)


@pytest.fixture
def router_files(tmp_path: Path) -> tuple[str, str]:
    router = tmp_path / "router.yaml"
    router.write_text(
        "name: auto\ndefault_expert: general\nclassifier: keyword\n"
        "experts:\n  - name: general\n    keywords: {hi: 1.0}\n"
        "    replicas: [{url: 'http://127.0.0.1:9/v1'}]\n"
    )
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(json.dumps({"query": "hi", "expert": "general"}) + "\n")
    return str(router), str(labelled)


def run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except BaseException as exc:  # what a person would see as a traceback
        captured = capsys.readouterr()
        return -1, captured.out, f"Traceback: {type(exc).__name__}: {exc}\n{captured.err}"
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_refusal(args: list[str], code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, (args, out, err)
    assert code == 2, (args, code, out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, (args, err)
    assert "unexpected" not in errors[0], (args, errors)


def commands(group: App, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every leaf command of the CLI, e.g. ("data", "generate", "sft")."""
    found: set[tuple[str, ...]] = set()
    for name in group:
        if name.startswith("-"):
            continue
        sub = group[name]
        nested = commands(sub, (*prefix, name))
        found |= nested or {(*prefix, name)}
    return found


def command_of(args: list[str]) -> tuple[str, ...]:
    known = commands(app)
    return max((c for c in known if tuple(args[: len(c)]) == c), key=len, default=())


def test_every_command_is_driven_with_bad_inputs(
    files: Files, router_files: tuple[str, str]
) -> None:
    """A new command fails this test until it has its bad inputs and unknown-option case."""
    known = commands(app)
    assert len(known) == 16
    assert {command_of(list(c)) for c in COMMANDS} == known
    assert {command_of(case) for case in bad_inputs(files, *router_files)} == known - {("doctor",)}


def test_bad_inputs_to_every_command_are_one_line_errors_in_process(
    files: Files, router_files: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    problems = []
    for args in bad_inputs(files, *router_files):
        code, out, err = run_in_process(args, capsys)
        try:
            assert_clean_refusal(args, code, out, err)
        except AssertionError as exc:
            problems.append(str(exc)[:600])
    assert not problems, "\n".join(problems)


def test_an_embedding_model_id_that_is_already_served_is_refused_before_loading(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = files.root / "adapter"  # a real adapter directory, so the --lora check passes
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    for clash in (
        ["--served-model-name", "all-minilm-l6-v2"],
        ["--lora", f"all-minilm-l6-v2={adapter}"],
    ):
        args = ["serve", "--model", files.missing, *clash, "--embedding-model", "all-minilm-l6-v2"]
        code, out, err = run_in_process(args, capsys)
        assert_clean_refusal(args, code, out, err)
        assert "already a served model" in err, err


def test_unknown_options_and_commands_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for args in unknown_options():
        code, out, err = run_in_process(args, capsys)
        assert "Traceback" not in out + err, (args, out, err)
        assert code == 2, (args, code, out, err)
        assert "no-such" in out + err, (args, out, err)  # cyclopts names what was wrong


@pytest.mark.parametrize(
    "case",
    [
        lambda f: ["run-training", f.bad_yaml],
        lambda f: ["serve", "--model", f.missing],
        lambda f: ["merge", str(f.run_dir)],
        lambda f: ["eval", str(f.run_dir)],
        lambda f: ["data", "validate", f.empty_jsonl],
        lambda f: ["data", "generate", "sft", "-o", f.out, "--seeds", f.not_json],
        lambda f: ["data", "generate", "preferences", "-o", f.out, "--prompts", f.text_rows],
        lambda f: ["quantize", f.missing, "--method", "awq", "-o", f.out_dir],
        lambda f: ["route", "serve", f.list_yaml],
        lambda f: ["doctor", "--no-such-option"],
    ],
)
def test_bad_inputs_as_real_subprocesses(files: Files, case: Callable[[Files], list[str]]) -> None:
    args = case(files)
    result = run_cli(*args, cwd=files.root)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 2, (args, result.stdout, result.stderr)
