"""lm-evaluation-harness results (the dict `simple_evaluate` returns) as `Score`s."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from largeforge.domain.evaluation import Score, stderr_score

#: keys of a task's results that are not metrics.
NOT_METRICS = frozenset({"alias", "name", "sample_len", "samples", " "})


def scores_from_results(results: Mapping[str, Any], *, prefix: str = "lm:") -> tuple[Score, ...]:
    """One `Score` per metric of each requested task (a group: its aggregate, or its subtasks
    when it has none), named `prefix + task`. The metric is the harness's name without its
    `,none` filter (`acc`, `acc_norm`; another filter stays: `exact_match,strict-match`), the
    standard error its `METRIC_stderr,FILTER`, `n` the number of documents scored."""
    per_task: Mapping[str, Mapping[str, Any]] = results.get("results", {})
    children: Mapping[str, list[str]] = results.get("group_subtasks", {}) or {}
    nested = {child for kids in children.values() for child in kids}
    scores: list[Score] = []
    for task in per_task:
        if task not in nested:
            scores.extend(_task_scores(task, results, children, prefix))
    return tuple(scores)


def _task_scores(
    task: str, results: Mapping[str, Any], children: Mapping[str, list[str]], prefix: str
) -> list[Score]:
    values = results["results"].get(task, {})
    higher = results.get("higher_is_better", {}).get(task, {}) or {}
    n = _documents(task, results, children)
    scores: list[Score] = []
    for key, value in values.items():
        metric, _, filter_ = key.partition(",")
        if metric in NOT_METRICS or metric.endswith("_stderr") or not _is_number(value):
            continue
        stderr: Any = values.get(f"{metric}_stderr,{filter_}") if filter_ else None
        name = metric if filter_ in ("", "none") else key
        scores.append(
            stderr_score(
                f"{prefix}{task}",
                name,
                float(value),
                float(stderr) if _is_number(stderr) else None,
                n,
                higher_is_better=higher.get(metric) is not False,
            )
        )
    if not scores:  # a group without an aggregate: its subtasks' scores
        for child in children.get(task, []):
            scores.extend(_task_scores(child, results, children, prefix))
    return scores


def _documents(task: str, results: Mapping[str, Any], children: Mapping[str, list[str]]) -> int:
    counts = results.get("n-samples", {}).get(task)
    if counts:
        return int(counts.get("effective", counts.get("original", 0)))
    return sum(_documents(child, results, children) for child in children.get(task, []))


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
