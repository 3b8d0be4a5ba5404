"""A run's report: `report.md`, a loss-curve PNG and (for the preference and reward methods) a
reward-curve PNG, written from run.json and metrics.jsonl."""

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


def _series(metrics: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(m["step"], m[key]) for m in metrics if key in m]


def plot_rewards(metrics: list[dict[str, Any]], out: Path, title: str) -> bool:
    """The method's reward curves against the step: GRPO's mean reward (with its spread), each
    reward function's mean and the eval reward; the preference methods' reward margin and
    accuracy; the KL to the reference on its own axis. False when the run logged none."""
    lines = {
        "reward": _series(metrics, "reward"),
        "eval reward": _series(metrics, "eval_reward"),
        "reward margin": _series(metrics, "reward_margin"),
        "eval reward margin": _series(metrics, "eval_reward_margin"),
        "reward accuracy": _series(metrics, "reward_accuracy"),
    }
    labels = sorted({k for m in metrics for k in m if k.startswith("reward/")})
    lines |= {k.replace("/", ": "): _series(metrics, k) for k in labels}
    kl = _series(metrics, "kl")
    if not any(lines.values()) and not kl:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for name, points in lines.items():
        if points:
            style = "o--" if name.startswith("eval") else "-"
            axis.plot(*zip(*points, strict=True), style, label=name)
    spread = [(m["step"], m["reward"], m["reward_std"]) for m in metrics if "reward_std" in m]
    if spread:
        steps, means, stds = zip(*spread, strict=True)
        low = [a - b for a, b in zip(means, stds, strict=True)]
        high = [a + b for a, b in zip(means, stds, strict=True)]
        axis.fill_between(steps, low, high, alpha=0.15, label="reward +- std")
    axis.set_xlabel("step")
    axis.set_ylabel("reward")
    axis.grid(alpha=0.3)
    if kl:
        twin = axis.twinx()
        twin.plot(*zip(*kl, strict=True), ":", color="tab:gray", label="KL")
        twin.set_ylabel("KL")
        twin.legend(loc="lower right")
    axis.set_title(title)
    axis.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return True


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(run: TrainingRun, run_dir: Path) -> Path:
    """Write `report.md` (and `loss.png`) into `run_dir`; return the report's path."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    title = f"{run.run_id} ({run.plan.method})"
    has_plot = plot_losses(metrics, run_dir / "loss.png", title)
    has_rewards = plot_rewards(metrics, run_dir / "rewards.png", title)
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
        if result.eval_reward_after is not None:
            lines.append(
                f"- eval reward: {_fmt(result.eval_reward_before)} -> "
                f"{_fmt(result.eval_reward_after)}"
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
    if has_rewards:
        lines += ["", "![rewards](rewards.png)"]
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
