"""An evaluation's files: `eval.json`, `eval_report.md` and the bar chart `eval.png`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from largeforge.domain.evaluation import EvalReport, markdown_table

JSON_NAME = "eval.json"
MARKDOWN_NAME = "eval_report.md"
CHART_NAME = "eval.png"


class FilesystemEvalReportWriter:
    """Writes the three files into `out_dir` (created when missing)."""

    def write(self, report: EvalReport, out_dir: str) -> list[str]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        data = report.as_dict()
        (out / JSON_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        charted = plot_scores(report, out / CHART_NAME)
        (out / MARKDOWN_NAME).write_text(markdown_report(report, charted), encoding="utf-8")
        written = [out / JSON_NAME, out / MARKDOWN_NAME] + ([out / CHART_NAME] if charted else [])
        return [str(p) for p in written]


def markdown_report(report: EvalReport, charted: bool) -> str:
    meta = report.metadata
    lines = ["# Evaluation", ""]
    if "run_id" in meta:
        lines.append(f"- run: `{meta['run_id']}` (base `{meta.get('base')}`)")
    elif "ref" in meta:
        lines.append(f"- model: `{meta['ref']}`")
    for variant in report.variants:
        where = variant.model_dir + (
            f" + adapter {variant.adapter_dir}" if variant.adapter_dir else ""
        )
        lines.append(f"- {variant.name} ({variant.kind.value}): `{where}`")
    lines += [
        "",
        "Each score is followed by its 95 % interval: a bootstrap over examples for losses "
        "and agreement, Wilson for rates, +-1.96 standard errors for lm-evaluation-harness "
        "tasks. Difference columns are each model minus the first.",
        "",
        markdown_table(report),
    ]
    if charted:
        lines += ["", f"![scores]({CHART_NAME})"]
    return "\n".join(lines) + "\n"


def plot_scores(report: EvalReport, path: Path) -> bool:
    """One panel per task and metric, one bar per model with its interval as an error bar."""
    keys = report.metric_keys()
    if not keys:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v.name for v in report.variants]
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.4 * rows), dpi=100, squeeze=False
    )
    colours = plt.get_cmap("tab10")
    for index, (task, metric) in enumerate(keys):
        axis = axes[index // columns][index % columns]
        values, lower, upper, labels = [], [], [], []
        for name in names:
            score = report.score(name, task, metric)
            if score is None:
                continue
            labels.append(name)
            values.append(score.value)
            lower.append(score.value - score.low if score.low is not None else 0.0)
            upper.append(score.high - score.value if score.high is not None else 0.0)
        positions = list(range(len(labels)))
        axis.bar(
            positions,
            values,
            yerr=[lower, upper],
            capsize=4,
            color=[colours(names.index(n) % 10) for n in labels],
        )
        axis.set_xticks(positions, labels, rotation=20, ha="right")
        better = report.score(labels[0], task, metric) if labels else None
        arrow = "" if better is None else (" (higher is better)" if better.higher_is_better
                                           else " (lower is better)")  # fmt: skip
        axis.set_title(f"{task}: {metric}{arrow}", fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    for index in range(len(keys), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
