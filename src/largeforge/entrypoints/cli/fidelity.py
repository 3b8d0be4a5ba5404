"""`largeforge eval --fidelity` (and the static check after `merge` and `quantize`).

`check_fidelity(REF)` checks a run directory (or one model directory of a run, or a model with
an explicit training record): the tokenizer, template and generation config of every servable
artifact against what training used; the merged model served at temperature 0 through the HTTP
API against transformers' `generate`; the adapter served beside its base against the merged
model. One `error: ...` line per differing field on stderr and exit 1; `ok: ...` per check and 0
when everything is equal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from largeforge.application.fidelity import static_check
from largeforge.domain.errors import ConfigError
from largeforge.domain.fidelity import (
    FidelityCheck,
    FidelityReport,
    TokenizerFacts,
)


def check_fidelity(
    ref: str, *, output: Path | None = None, record: Path | None = None, dynamic: bool = True
) -> int:
    """Check REF's fidelity; print one line per check or mismatch; 1 on any mismatch, else 0.

    REF: a run directory (run.json, merged/, adapter/, quantized dirs), a model directory inside
    a run (checked against that run's record), or any model reference with `record` (a run
    directory or a tokenizer_facts.json); any other model reference is checked against its
    own facts (the generation EOS rule) and served vs generate. With `output`, fidelity.json
    is written there.
    `dynamic=False` does only the static facts check (no model is loaded).
    """
    from largeforge.config import Settings
    from largeforge.container import Container
    from largeforge.entrypoints.http.probe_server import HttpServedProbe

    container = Container.from_settings(Settings())
    checker = container.check_fidelity(served=HttpServedProbe())
    path = Path(ref)
    if record is not None:
        trained = _record(container, record)
        model_dir = container.model_resolver().resolve(ref)
        report = checker.check_model(model_dir, trained, dynamic=dynamic)
    elif _is_run(path):
        run_dir = path.resolve()
        run = container.run_reader(root=str(run_dir.parent)).load(run_dir.name)
        whole = None
        if run.plan.adapter.writes_whole_model and run.merged_dir:  # full fine-tuning
            whole = str(run_dir / Path(run.merged_dir).name)
        report = checker.check_run(
            str(run_dir), str(run.plan.model), dynamic=dynamic, whole_model=whole
        )
    elif path.is_dir() and _is_run(path.resolve().parent):
        run_dir = path.resolve().parent
        trained = checker.trained_facts(str(run_dir), _base_model(container, run_dir))
        report = checker.check_model(str(path.resolve()), trained, dynamic=dynamic)
    else:  # a model without a training record: its own facts (the EOS rule) and serving
        model_dir = container.model_resolver().resolve(ref)
        trained = container.tokenizer_facts().read(model_dir)
        report = checker.check_model(model_dir, trained, dynamic=dynamic)
        print(
            f"note: {ref} is not a run: no training record, so its own tokenizer facts are the "
            "reference (its generation config must stop where its template ends turns)"
        )
    _print(report)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        (output / "fidelity.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.ok else 1


def static_check_after(
    container: Any, model_dir: str, *, run_dir: Path | None = None, source_dir: str | None = None
) -> FidelityCheck:
    """The static check `merge` and `quantize` run on what they wrote: against the run's record
    (`run_dir`) or the model it was made from (`source_dir`). Mismatches are printed as
    warnings; they do not fail the command (`largeforge eval --fidelity` exits 1 on them)."""
    facts = container.tokenizer_facts()
    trained: TokenizerFacts | None = None
    against = "what training used"
    if run_dir is not None:
        trained = facts.recorded(str(run_dir))
    if trained is None and source_dir is not None:
        trained = facts.read(source_dir)
        against = f"those of {source_dir}"
    if trained is None:
        raise ConfigError("a static fidelity check needs a run or a source model")
    check = static_check(facts, model_dir, trained)
    if check.ok:
        print(f"fidelity: tokenizer, chat template and generation config equal {against}")
    for mismatch in check.mismatches:
        print(f"warning: fidelity: {mismatch.message}", file=sys.stderr)
    return check


def _is_run(path: Path) -> bool:
    return (path / "run.json").is_file()


def _base_model(container: Any, run_dir: Path) -> str:
    run = container.run_reader(root=str(run_dir.parent)).load(run_dir.name)
    return str(run.plan.model)


def _record(container: Any, record: Path) -> TokenizerFacts:
    if record.is_dir():
        recorded: TokenizerFacts | None = container.tokenizer_facts().recorded(str(record))
        if recorded is None:
            raise ConfigError(f"{record}: no tokenizer_facts.json (a run made before records)")
        return recorded
    try:
        return TokenizerFacts.from_dict(json.loads(record.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{record}: not a tokenizer facts record ({exc})") from None


def _print(report: FidelityReport) -> None:
    for check in report.checks:
        for mismatch in check.mismatches:
            print(f"error: {mismatch.message}", file=sys.stderr)
        if check.ok:
            print(f"ok: {check.name}: {check.subject}")
        for note in check.notes:
            print(f"note: {note}")
    for note in report.notes:
        print(f"note: {note}")
