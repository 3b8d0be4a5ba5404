"""Dataset preparation: read rows, detect the format, parse, clean, validate, dedupe, encode.

Nothing is dropped silently: every row either becomes a record or a `DatasetIssue` in the report.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice

import structlog

from largeforge.application.ports import ExampleEncoder, RawRow, RowSource
from largeforge.domain.datasets import (
    DatasetIssue,
    EncodedExample,
    IssueAction,
    LabeledCompletion,
    PreferencePair,
    PromptExample,
    Record,
    SftExample,
)
from largeforge.domain.errors import DatasetError
from largeforge.domain.formats import (
    DatasetFormat,
    DatasetSpec,
    RowError,
    apply_columns,
    detect_format,
    parse_row,
)
from largeforge.domain.tool_messages import parse_tools
from largeforge.domain.tools import ToolSpec
from largeforge.domain.validation import (
    DatasetPolicyError,
    Dedupe,
    TooLong,
    ValidationPolicy,
    ValidationReport,
    check_record,
    clean_record,
    dedupe_key,
)

log = structlog.get_logger(__name__)

DETECTION_SAMPLE = 200
"""How many leading rows vote on the format."""

ENCODE_BATCH = 8192
"""Records rendered and tokenized per tokenizer call."""


@dataclass(frozen=True)
class PreparedDataset:
    """The usable records of one source, their encodings (when an encoder was given), the report."""

    spec: DatasetSpec
    records: tuple[Record, ...]
    encoded: tuple[EncodedExample | None, ...]
    report: ValidationReport


class PrepareDataset:
    """Turn one dataset source into validated records and a report (never raises for bad rows)."""

    def __init__(self, source: RowSource) -> None:
        self._source = source

    def execute(
        self,
        spec: DatasetSpec,
        policy: ValidationPolicy | None = None,
        encoder: ExampleEncoder | None = None,
        max_length: int | None = None,
    ) -> PreparedDataset:
        policy = policy or ValidationPolicy()
        name = self._source.name(spec.source)
        raw_rows = list(self._source.rows(spec.source))
        if not raw_rows:
            raise DatasetError(f"{name}: no rows (the file is empty)")
        columns = spec.column_map
        fmt, detection = self._format(spec, raw_rows, columns)
        state = _Accumulator(name, policy, encoder, max_length)
        for raw in raw_rows:
            state.add(raw, fmt, columns)
        state.finish()
        report = ValidationReport(
            source=name,
            format=fmt.value,
            detection=detection,
            rows=len(raw_rows) - state.headers,
            kept=len(state.records),
            issues=tuple(state.issues),
            token_lengths=tuple(state.lengths),
        )
        log.info(
            "dataset_prepared",
            source=name,
            format=fmt.value,
            detection=detection,
            rows=report.rows,
            kept=report.kept,
            issues=report.by_kind(),
        )
        return PreparedDataset(spec, tuple(state.records), tuple(state.encoded), report)

    @staticmethod
    def _format(
        spec: DatasetSpec, rows: Sequence[RawRow], columns: Mapping[str, str]
    ) -> tuple[DatasetFormat, str]:
        if spec.format is not None:
            return spec.format, "given"
        if all(r.error is not None for r in rows):  # nothing to vote: every row is an issue
            return DatasetFormat.MESSAGES, "not detected: no decodable rows"
        sample = (
            apply_columns(r.value, columns) if isinstance(r.value, Mapping) else r.value
            for r in islice((r for r in rows if r.error is None), DETECTION_SAMPLE)
        )
        detection = detect_format(sample)
        if detection.format is None:
            raise DatasetError(
                f"{spec.source}: cannot detect the format ({detection.describe()}); set `format:` "
                f"to one of {', '.join(f.value for f in DatasetFormat)} or map columns"
            )
        return detection.format, f"detected: {detection.describe()}"


_Encoding = EncodedExample | tuple[EncodedExample, ...] | RowError | None
"""A record's encoding: both sides of a pair, the template's refusal, or nothing to encode."""


class _Accumulator:
    """Per-source state while rows stream through: records, issues, seen keys, lengths."""

    def __init__(
        self,
        name: str,
        policy: ValidationPolicy,
        encoder: ExampleEncoder | None,
        max_length: int | None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.encoder = encoder
        self.max_length = max_length
        self.records: list[Record] = []
        self.encoded: list[EncodedExample | None] = []
        self.issues: list[DatasetIssue] = []
        self.lengths: list[int] = []
        self.seen: dict[str, int] = {}
        self.pending: list[tuple[int, Record]] = []
        self.tools: tuple[ToolSpec, ...] = ()
        self.headers = 0

    def file_tools(self, line: int, value: object) -> None:
        """A row holding only `tools` declares them for the rows after it that have none."""
        try:
            self.tools = parse_tools(value)
        except RowError as error:  # a bad declaration is a bad row
            self.issue(line, error)
            return
        self.headers += 1

    def issue(self, line: int, error: RowError, action: IssueAction = IssueAction.SKIPPED) -> None:
        self.issues.append(
            DatasetIssue(self.name, line, error.reason, action, error.field, error.kind)
        )

    def add(self, raw: RawRow, fmt: DatasetFormat, columns: Mapping[str, str]) -> None:
        if raw.error is not None:
            self.issue(raw.line, RowError(raw.error, kind="invalid_json"))
            return
        value = apply_columns(raw.value, columns) if isinstance(raw.value, Mapping) else raw.value
        if isinstance(value, Mapping) and set(value) == {"tools"}:
            self.file_tools(raw.line, value["tools"])
            return
        try:
            record = parse_row(value, fmt)
            if isinstance(record, SftExample) and not record.tools and self.tools:
                record = replace(record, tools=self.tools)
            if self.policy.clean_text:
                record = clean_record(record)
            check_record(record, require_tool_results=self.policy.require_tool_results)
        except RowError as error:
            self.issue(raw.line, error)
            return
        if self.policy.dedupe is not Dedupe.NONE:
            key = dedupe_key(record, self.policy.dedupe)
            if key in self.seen:
                reason = f"duplicate of line {self.seen[key]}"
                self.issue(raw.line, RowError(reason, kind="duplicate"))
                return
            self.seen[key] = raw.line
        self.pending.append((raw.line, replace(record, source=f"{self.name}:{raw.line}")))

    def finish(self) -> None:
        """Encode the accepted records in batches, then apply the length and mask checks."""
        for start in range(0, len(self.pending), ENCODE_BATCH):
            batch = self.pending[start : start + ENCODE_BATCH]
            for (line, record), encoded in zip(batch, self._encode_batch(batch), strict=True):
                try:
                    if isinstance(encoded, RowError):
                        raise encoded
                    checked = self._check(record, encoded, line)
                except RowError as error:
                    self.issue(line, error)
                    continue
                self.records.append(record)
                self.encoded.append(checked)
        self.pending.clear()
        self.issues.sort(key=lambda issue: issue.line)

    def _encode_batch(self, batch: Sequence[tuple[int, Record]]) -> list[_Encoding]:
        """One encoding per record (a tuple of both sides for preference pairs), in one
        tokenizer call; when the template refuses a record, each is encoded alone so the
        refusal is that row's issue."""
        if self.encoder is None:
            return [None] * len(batch)
        try:
            return self._encode_records([record for _, record in batch])
        except RowError:
            out: list[_Encoding] = []
            for _, record in batch:
                try:
                    out += self._encode_records([record])
                except RowError as error:
                    out.append(error)
            return out

    def _encode_records(self, records: Sequence[Record]) -> list[_Encoding]:
        assert self.encoder is not None
        conversations: list[SftExample] = []
        for record in records:
            if isinstance(record, SftExample):
                conversations.append(record)
            elif isinstance(record, PreferencePair):
                conversations += [SftExample(c) for c in record.as_conversations()]
            elif isinstance(record, LabeledCompletion):
                conversations.append(SftExample(record.as_conversation()))
        encoded = iter(self.encoder.encode_many(conversations))
        out: list[_Encoding] = []
        for record in records:
            if isinstance(record, SftExample):
                out.append(next(encoded))
            elif isinstance(record, PreferencePair):
                out.append((next(encoded), next(encoded)))
            elif isinstance(record, LabeledCompletion):
                out.append((next(encoded),))  # checked for length like a pair's side
            elif isinstance(record, PromptExample):
                out.append(None)  # nothing to train on: refused by `_check`
            else:
                out.append(self.encoder.encode_text(record))
        return out

    def _check(
        self, record: Record, encoded: EncodedExample | tuple[EncodedExample, ...] | None, line: int
    ) -> EncodedExample | None:
        if isinstance(record, PromptExample) and self.encoder is not None:
            raise RowError(
                "a prompt without an answer: nothing to train on (prompt files are for "
                "`data generate`)",
                kind="prompt_only",
            )
        if encoded is None:
            return None
        if isinstance(encoded, tuple):  # a pair (or a labelled completion): the longer side fits
            longest = max(encoded, key=lambda e: e.length)
            self.lengths.append(longest.length)
            if self.max_length and longest.length > self.max_length:
                raise RowError(
                    f"{longest.length} tokens after templating > max_length {self.max_length}",
                    kind="too_long",
                )
            return None
        self.lengths.append(encoded.length)
        if encoded.trainable_tokens == 0:
            raise RowError("no trainable tokens after templating", kind="no_trainable_tokens")
        if self.max_length and encoded.length > self.max_length:
            reason = f"{encoded.length} tokens after templating > max_length {self.max_length}"
            if self.policy.too_long is TooLong.SKIP:
                raise RowError(reason, kind="too_long")
            encoded = encoded.truncated(self.max_length)
            if encoded.trainable_tokens == 0:
                raise RowError(f"{reason}; no trainable tokens left", kind="no_trainable_tokens")
            self.issue(line, RowError(reason, kind="too_long"), IssueAction.TRUNCATED)
        return replace(encoded, source=record.source)


class ReadPrompts:
    """Prompts from a dataset of any conversational format: prompt-only rows (Alpaca without
    `output`, `{"prompt": ...}`, messages ending with a user turn) and full conversations
    through their user turns. Bad rows are reported like any dataset's; a source with no usable
    prompt is a `DatasetError` naming its first rejected row."""

    def __init__(self, prepare: PrepareDataset) -> None:
        self._prepare = prepare

    def execute(self, source: str) -> PreparedDataset:
        prepared = self._prepare.execute(DatasetSpec(source, DatasetFormat.PROMPT))
        report = prepared.report
        if not prepared.records:
            first = report.issues[0]  # rows were read (an empty source raised): all rejected
            field = f" field '{first.field}'" if first.field else ""
            raise DatasetError(
                f"{report.source}: no usable prompt in {report.rows} rows; first rejected: "
                f"line {first.line}{field}: {first.reason}"
            )
        return prepared


def enforce_policy(prepared: Sequence[PreparedDataset], policy: ValidationPolicy) -> None:
    """Raise `DatasetPolicyError` (with every report) when any source breaks `policy`."""
    reports = tuple(p.report for p in prepared)
    problems = [v for r in reports if (v := r.violation(policy))]
    if problems:
        raise DatasetPolicyError("; ".join(problems), reports)


def mix(
    prepared: Sequence[PreparedDataset], seed: int
) -> list[tuple[Record, EncodedExample | None]]:
    """Combine sources: all rows by default, `count` rows, or shares proportional to `weight`.

    With weights, the mixture keeps the total row count and gives each source
    `total * weight / sum(weights)` rows, repeating a source's rows when its share needs more.
    """
    rng = random.Random(seed)
    pools = []
    for item in prepared:
        rows = list(zip(item.records, item.encoded, strict=True))
        rng.shuffle(rows)
        pools.append((item.spec, rows))
    total = sum(len(rows) for _, rows in pools)
    weights = [spec.weight for spec, _ in pools if spec.weight is not None]
    weight_sum = sum(weights)
    mixed: list[tuple[Record, EncodedExample | None]] = []
    for spec, rows in pools:
        if not rows:
            continue
        if spec.count is not None:
            wanted = spec.count
        elif spec.weight is not None:
            wanted = max(1, round(total * spec.weight / weight_sum))
        else:
            wanted = len(rows)
        repeats, rest = divmod(wanted, len(rows))
        mixed.extend(rows * repeats + rows[:rest])
    rng.shuffle(mixed)
    return mixed
