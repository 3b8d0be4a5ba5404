"""A run's report: `report.md` and a loss-curve PNG, written from run.json and metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from largeforge.domain.training import TrainingRun


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def plot_losses(metrics: list[dict[str, Any]], out: Path, title: str) -> bool:
    """Train and eval loss against the step; False when there is nothing to plot."""
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    if not train and not evals:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        axis.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    if evals:
        axis.plot(*zip(*evals, strict=True), "o--", label="eval loss", color="tab:orange")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return True


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(run: TrainingRun, run_dir: Path) -> Path:
    """Write `report.md` (and `loss.png`) into `run_dir`; return the report's path."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    has_plot = plot_losses(metrics, run_dir / "loss.png", f"{run.run_id} ({run.plan.method})")
    result = run.result
    speeds = [m["tokens_per_second"] for m in metrics if "tokens_per_second" in m]
    peak = max((m.get("peak_memory_mb", 0) for m in metrics), default=0)
    lines = [
        f"# Run {run.run_id}",
        "",
        f"- state: **{run.state.value}**" + (f" ({run.error})" if run.error else ""),
        f"- model: `{run.plan.model}`; method {run.plan.method}, adapter {run.plan.adapter}",
        f"- datasets: {', '.join(d.source for d in run.plan.datasets)}",
        f"- duration: {_fmt(run.duration_seconds, 1)} s; resumes: {run.resumes}",
    ]
    if result is not None:
        lines += [
            f"- steps: {result.steps}; train examples {result.train_examples}, "
            f"eval examples {result.eval_examples}",
            f"- train loss: {_fmt(result.train_loss)}",
            f"- eval loss: {_fmt(result.eval_loss_before)} -> {_fmt(result.eval_loss_after)}",
        ]
        if result.eval_reward_margin_after is not None:
            lines.append(
                f"- eval reward margin: {_fmt(result.eval_reward_margin_before)} -> "
                f"{_fmt(result.eval_reward_margin_after)}"
            )
    if speeds:
        lines.append(f"- tokens/s: median {sorted(speeds)[len(speeds) // 2]:.0f}")
    mfus = sorted(m["mfu"] for m in metrics if "mfu" in m)
    if mfus:
        lines.append(f"- MFU: median {mfus[len(mfus) // 2]:.1%} of the measured matmul peak")
    if peak:
        lines.append(f"- peak memory: {peak:.0f} MB")
    if run.merged_dir:
        lines += ["", f"Serve it: `largeforge serve --model {run.merged_dir}`"]
    if has_plot:
        lines += ["", "![loss curve](loss.png)"]
    if (run_dir / "eval" / "eval_report.md").is_file():
        lines += [
            "",
            "Evaluation (`largeforge eval`): [eval/eval_report.md](eval/eval_report.md)",
            "",
            "![evaluation](eval/eval.png)",
        ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
