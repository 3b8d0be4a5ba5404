"""`largeforge eval`: base, adapter, merged and quantized models on the same tasks."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter


def evaluate(
    ref: str = "runs/latest",
    *,
    tasks: Annotated[list[str] | None, Parameter(consume_multiple=True, negative=())] = None,
    compare: str | None = None,
    fidelity: bool = False,
    output: Annotated[Path | None, Parameter(name=["--output", "-o"])] = None,
) -> int:
    """Score a run's models (or a model) on the same tasks, side by side with intervals.

    Writes eval_report.md (the table), eval.json and eval.png into RUN/eval (or -o), and
    links them from the run's report.md.

    Parameters
    ----------
    ref
        A run directory (runs/latest: its base, adapter, merged and quantized models are
        found from the run) or a model reference (alias, directory, hub id).
    tasks
        Tasks (default heldout): `heldout` (the run's eval split with its masks; `heldout:FILE`
        any dataset file), `lm:NAME` or `lm:FILE.yaml` (an lm-evaluation-harness task;
        `largeforge_facts` is bundled and offline), `generate:FILE` (prompts with references),
        `tools` or `tools:FILE` (tool-call accuracy; bare: the bundled set).
    compare
        Comma-separated variants (default: all the run has): base, adapter, merged,
        quantized (every quantized model in the run) or one by name, and NAME=MODEL.
    fidelity
        Also check that the served model is the trained one (template, EOS, special tokens,
        served tokens equal transformers' generate, adapter equals merged); exit 1 on a
        mismatch.
    output
        Output directory (default RUN/eval, or ./eval for a model reference).
    """
    return run_eval(
        ref,
        tasks=_split(tasks or []),
        compare=_split([compare] if compare else []),
        fidelity=fidelity,
        output=output,
    )


def run_eval(
    ref: str,
    *,
    tasks: Sequence[str] = (),
    compare: Sequence[str] = (),
    fidelity: bool = False,
    output: Path | None = None,
) -> int:
    """The evaluation `largeforge eval` and a run file's `eval:` section run."""
    from largeforge.container import Container
    from largeforge.domain.evaluation import markdown_table

    container = Container.from_settings()
    plan = container.plan_evaluation().plan(ref, tasks, compare)
    out = output or (Path(plan.run_dir) / "eval" if plan.run_dir else Path("eval"))
    report = container.evaluate_models().execute(plan.variants, plan.tasks, str(out), plan.metadata)
    print(markdown_table(report))
    print(f"\nwritten to {out}/: eval_report.md, eval.json, eval.png")
    if plan.run is not None and plan.run_dir is not None:
        run_dir = Path(plan.run_dir)
        if run_dir.name == plan.run.run_id:  # a copied or renamed run keeps its old report
            container.run_reader(root=str(run_dir.parent)).write_report(plan.run)
    if not fidelity:
        return 0
    from largeforge.entrypoints.cli.fidelity import check_fidelity

    sys.stdout.flush()
    return check_fidelity(ref, output=out)


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
