"""`largeforge data validate | preview | convert`: look at a dataset before training on it."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from cyclopts import Parameter

from largeforge.config import FormatName, Settings, ValidationSettings, validate_settings
from largeforge.domain.datasets import EncodedExample, PromptExample, SftExample
from largeforge.domain.errors import ConfigError
from largeforge.domain.formats import DatasetFormat, DatasetSpec, RowError, to_row
from largeforge.domain.validation import ValidationReport

MAX_SHOWN_ISSUES = 10


def _container() -> Any:
    from largeforge.container import Container

    return Container.from_settings(Settings())


def _spec(file: str, fmt: str | None) -> DatasetSpec:
    return DatasetSpec(file, DatasetFormat(fmt) if fmt else None)


def validate(
    file: str,
    /,
    *,
    format_: Annotated[FormatName | None, Parameter(name="--format")] = None,
    model: str | None = None,
    max_length: int = 2048,
    on_error: Literal["skip", "fail"] = "skip",
    max_skip_fraction: float = 0.05,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
) -> int:
    """Check every row of a dataset and summarise what training would use.

    Exits 0 when the dataset is within the validation policy, 1 otherwise.

    Parameters
    ----------
    file
        .jsonl, .json, .parquet, .csv, a `save_to_disk` directory, a hub id, or 'sample'.
    format_
        alpaca, sharegpt, messages, prompt_completion, preference, text or prompt (prompt-only
        rows; default: detected).
    model
        Model whose chat template and tokenizer measure lengths and loss masks.
    max_length
        Token limit per row after templating (with --model).
    on_error
        'skip' bad rows (up to --max-skip-fraction) or 'fail' on any.
    max_skip_fraction
        Largest share of rows that may be skipped.
    json_output
        Print the report as JSON.
    """
    container = _container()
    options = {"on_error": on_error, "max_skip_fraction": max_skip_fraction}
    policy = validate_settings(ValidationSettings, options, "validate options").to_policy()
    encoder = None
    if model:
        encoder = container.encoder_factory().for_model(container.model_resolver().resolve(model))
    prepared = container.prepare_dataset().execute(
        _spec(file, format_), policy, encoder, max_length if encoder else None
    )
    report = prepared.report
    violation = report.violation(policy)
    if json_output:
        payload = report.as_dict(max_issues=len(report.issues)) | {
            "ok": violation is None,
            "violation": violation,
        }
        print(json.dumps(payload, indent=2))
    else:
        _print_report(report, violation)
    return 0 if violation is None else 1


def _print_report(report: ValidationReport, violation: str | None) -> None:
    print(f"{report.source}: {report.format} ({report.detection})")
    print(f"  rows {report.rows}   kept {report.kept}   skipped {report.dropped}")
    for kind, count in report.by_kind().items():
        print(f"    {kind:<22} {count}")
    lengths = report.length_percentiles()
    if lengths:
        print("  tokens  " + "  ".join(f"{k} {v}" for k, v in lengths.items()))
    for issue in report.issues[:MAX_SHOWN_ISSUES]:
        print(f"  {issue}")
    if len(report.issues) > MAX_SHOWN_ISSUES:
        print(f"  ... and {len(report.issues) - MAX_SHOWN_ISSUES} more (use --json for all)")
    print("ok: within the validation policy" if violation is None else f"FAILED: {violation}")


def convert(
    file: str,
    /,
    *,
    to: Literal["messages", "alpaca", "sharegpt"],
    output: Annotated[Path, Parameter(name=["--output", "-o"])],
    format_: Annotated[FormatName | None, Parameter(name="--format")] = None,
) -> int:
    """Rewrite a dataset's conversations in another format (JSON Lines).

    Rows that are invalid, or that the target format cannot hold, are reported on stderr.

    Parameters
    ----------
    file
        The dataset to read (any supported file type).
    to
        Target format.
    output
        The .jsonl file to write.
    format_
        Source format (default: detected).
    """
    prepared = _container().prepare_dataset().execute(_spec(file, format_))
    target = DatasetFormat(to)
    written, refused = 0, 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for record in prepared.records:
            try:
                row = to_row(record, target)
            except RowError as error:
                refused += 1
                print(f"{record_source(record)}: {error.reason} (skipped)", file=sys.stderr)
                continue
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    for issue in prepared.report.issues:
        print(str(issue), file=sys.stderr)
    skipped = refused + prepared.report.dropped
    print(f"wrote {written} rows to {output} ({skipped} skipped)")
    return 0 if skipped == 0 else 1


def record_source(record: object) -> str:
    return str(getattr(record, "source", "?"))


def preview(
    file: str,
    /,
    *,
    model: str,
    n: Annotated[int, Parameter(name=["-n", "--n"])] = 3,
    format_: Annotated[FormatName | None, Parameter(name="--format")] = None,
    train_on: Literal["all", "last"] = "all",
    markers: bool | None = None,
) -> int:
    """Render examples with the model's chat template and show which tokens are trained.

    Trained tokens are green on a terminal, and wrapped in [[ ]] otherwise (or with --markers);
    trained tool calls are magenta, or wrapped in [[call: ]]. Tool results and the tools block
    are context, never trained.

    Parameters
    ----------
    file
        The dataset to read.
    model
        Model alias, directory or hub id whose tokenizer and chat template to use.
    n
        How many examples to show.
    format_
        Source format (default: detected).
    train_on
        Train every assistant turn ('all') or only the last.
    markers
        Force [[ ]] markers around trained text (default: when not a terminal).
    """
    from rich.console import Console
    from rich.text import Text

    container = _container()
    encoder = container.encoder_factory().for_model(
        container.model_resolver().resolve(model), train_on
    )
    prepared = container.prepare_dataset().execute(_spec(file, format_))
    console = Console(highlight=False)
    use_markers = markers if markers is not None else not console.is_terminal
    shown = 0
    for record in prepared.records:
        if shown >= n or not isinstance(record, SftExample):
            continue
        encoded = encoder.encode(record)
        calls = sum(len(m.tool_calls) for m in record.conversation.messages)
        tools = f", tools: {', '.join(t.name for t in record.tools)}" if record.tools else ""
        called = f", {calls} call{'s' * (calls != 1)}" if calls else ""
        console.rule(
            f"{record.source}  ({encoded.length} tokens, {encoded.trainable_tokens} trained"
            f"{called}{tools})"
        )
        console.print(_render(encoder.tokenizer, encoded, use_markers, Text))
        shown += 1
    if shown == 0:
        print("no conversations to preview", file=sys.stderr)
        return 1
    return 0


def _render(tokenizer: Any, encoded: EncodedExample, markers: bool, text_cls: Any) -> Any:
    text = text_cls()
    runs: list[tuple[bool, list[int]]] = []
    for token, keep in zip(encoded.input_ids, encoded.trainable, strict=True):
        if runs and runs[-1][0] == keep:
            runs[-1][1].append(token)
        else:
            runs.append((keep, [token]))
    for keep, ids in runs:
        piece = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        if not keep:
            text.append(piece, style="dim")
            continue
        for segment, is_call in split_calls(piece):
            if markers:
                text.append(f"[[call: {segment}]]" if is_call else f"[[{segment}]]")
            else:
                text.append(segment, style="bold magenta" if is_call else "bold green")
    return text


CALL_TEXT = re.compile(
    r"<tool_call>[\s\S]*?</tool_call>"  # hermes, Qwen
    r"|\[TOOL_CALLS\][\s\S]*?\]"  # Mistral
    r'|\{"name": ?"[^"]+", ?"(?:arguments|parameters)": ?\{[\s\S]*?\}\}'  # Llama 3.x JSON
)
"""How the common tool-call formats write a call (for highlighting only)."""


def split_calls(text: str) -> list[tuple[str, bool]]:
    """`text` cut into (segment, is a call) pieces, in order; empty segments left out."""
    pieces: list[tuple[str, bool]] = []
    start = 0
    for match in CALL_TEXT.finditer(text):
        if match.start() > start:
            pieces.append((text[start : match.start()], False))
        pieces.append((match.group(), True))
        start = match.end()
    if start < len(text):
        pieces.append((text[start:], False))
    return pieces


@contextmanager
def _engine(container: Any, model: str) -> Iterator[Any]:
    """The model's batching engine, closed on exit so that its batcher thread stops before the
    interpreter shuts down."""
    engine = container.generation_engine(model=model)
    try:
        yield engine
    finally:
        engine.close()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _progress_bar(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", file=sys.stderr, dynamic_ncols=True)


def _prompts(container: Any, source: str, limit: int | None = None) -> list[PromptExample]:
    """The usable prompts of `source` (a `DatasetError` when none), the rejected rows on stderr."""
    prepared = container.read_prompts().execute(source)
    report = prepared.report
    if report.issues:
        kinds = ", ".join(f"{k} {v}" for k, v in report.by_kind().items())
        print(
            f"{report.source}: {report.kept} of {report.rows} rows are usable prompts "
            f"({report.dropped} rejected: {kinds}); first: {report.issues[0]}",
            file=sys.stderr,
        )
    prompts = [r for r in prepared.records if isinstance(r, PromptExample)]
    return prompts[:limit] if limit is not None else prompts


def _summary(kind: str, written: int, path: Path, result: Any) -> int:
    rejected = ", ".join(f"{k} {v}" for k, v in result.rejected.most_common()) or "none"
    print(
        f"wrote {written} {kind} rows to {path} ({result.attempts} attempts; rejected: {rejected})"
    )
    if not written:
        print(
            f"error: no {kind} rows kept: all {result.attempts} candidates were rejected "
            f"({rejected})",
            file=sys.stderr,
        )
    return 0 if written else 1


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"--{name} must be at least 1, got {value}")


def generate_sft(
    *,
    output: Annotated[Path, Parameter(name=["--output", "-o"])],
    model: str = "smollm2-135m-instruct",
    seeds: str = "sample",
    count: int = 20,
    max_tokens: int = 256,
    temperature: float = 0.9,
    seed: int = 0,
) -> int:
    """Generate new instruction/response pairs from seed tasks (self-instruct), as JSON Lines.

    Parameters
    ----------
    output
        The .jsonl file to write (messages format).
    model
        The model that writes tasks and answers.
    seeds
        Seed tasks: prompt-only rows (Alpaca without output, {"prompt": ...}, messages ending
        with a user turn) or full conversations, whose user turns are used.
    count
        How many pairs to write.
    max_tokens
        Longest answer, in tokens.
    temperature
        Sampling temperature for new tasks.
    seed
        Random seed (same seed, same output).
    """
    import asyncio

    _positive("count", count)
    _positive("max-tokens", max_tokens)
    container = _container()
    seed_prompts = _prompts(container, seeds)
    with _engine(container, model) as engine, _progress_bar(count, "generating sft") as bar:
        generator = container.generate_sft_data(
            engine=engine, max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        result = asyncio.run(generator.execute(seed_prompts, count, progress=bar.update))
    _write_jsonl(output, [to_row(r, DatasetFormat.MESSAGES) for r in result.records])
    return _summary("sft", len(result.records), output, result)


def generate_preferences(
    *,
    output: Annotated[Path, Parameter(name=["--output", "-o"])],
    model: str = "smollm2-135m-instruct",
    prompts: str = "sample",
    count: int = 10,
    samples: int = 4,
    max_tokens: int = 128,
    temperature: float = 1.0,
    seed: int = 0,
) -> int:
    """Generate prompt/chosen/rejected pairs: sample answers, rank them by the model's own
    mean log-likelihood, keep the best and the worst.

    Parameters
    ----------
    output
        The .jsonl file to write (preference format, message lists).
    model
        The model that answers and scores.
    prompts
        Prompts: prompt-only rows (Alpaca without output, {"prompt": ...}, messages ending
        with a user turn) or full conversations, minus their final answer.
    count
        How many prompts to use.
    samples
        Answers sampled per prompt (at least 2).
    max_tokens
        Longest answer, in tokens.
    temperature
        Sampling temperature.
    seed
        Random seed.
    """
    import asyncio

    _positive("count", count)
    _positive("max-tokens", max_tokens)
    if samples < 2:
        raise ConfigError(f"--samples must be at least 2 to form a pair, got {samples}")
    container = _container()
    prompt_list = [p.prompt for p in _prompts(container, prompts, limit=count)]
    with (
        _engine(container, model) as engine,
        _progress_bar(len(prompt_list), "generating preferences") as bar,
    ):
        generator = container.generate_preference_data(
            engine=engine,
            scorer=container.response_scorer(engine=engine),
            samples=samples,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
        )
        result = asyncio.run(generator.execute(prompt_list, progress=bar.update))
    rows = [
        {
            "prompt": [m.as_dict() for m in pair.prompt],
            "chosen": [m.as_dict() for m in pair.chosen],
            "rejected": [m.as_dict() for m in pair.rejected],
        }
        for pair in result.records
    ]
    _write_jsonl(output, rows)
    return _summary("preference", len(rows), output, result)
