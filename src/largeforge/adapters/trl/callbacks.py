"""transformers `TrainerCallback`s: metrics to the run store and a live progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from largeforge.application.ports import MetricsCallback
from largeforge.domain.training import StepMetrics


class MetricsForwarder(TrainerCallback):  # type: ignore[misc]
    """Turns trainer logs into `StepMetrics` (with tokens/s from TRL's `num_tokens` counter)."""

    def __init__(
        self,
        sink: MetricsCallback,
        flops_per_second_peak: float | None = None,
        flops_per_token: float | None = None,
        trainable_tokens: Callable[[], int | None] | None = None,
    ) -> None:
        self._sink = sink
        self._trainable_tokens = trainable_tokens
        self._peak = flops_per_second_peak
        self._flops_per_token = flops_per_token
        self._last_tokens: float | None = None
        self._last_time: float | None = None
        self.latest: StepMetrics | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from largeforge.adapters.system.signals import StopRequested, stop_requested

        if stop_requested.is_set():
            raise StopRequested("stop requested")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from largeforge.adapters.system.signals import StopRequested, stop_requested

        if stop_requested.is_set():
            raise StopRequested("stop requested")
        self._last_time = time.perf_counter()
        # From a fresh start TRL counts tokens from 0; after a resume the first log only sets
        # the baseline (the restored counter includes tokens seen before the interruption).
        self._last_tokens = 0.0 if state.global_step == 0 else None

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        logs = logs or {}
        if "loss" not in logs and "eval_loss" not in logs:
            return
        tokens_per_second = None
        now = time.perf_counter()
        if "num_tokens" in logs and self._last_time is not None and "loss" in logs:
            tokens = float(logs["num_tokens"])
            elapsed = now - self._last_time
            if elapsed > 0 and self._last_tokens is not None and tokens >= self._last_tokens:
                tokens_per_second = round((tokens - self._last_tokens) / elapsed, 1)
            self._last_tokens, self._last_time = tokens, now
        metrics = StepMetrics(
            step=int(state.global_step),
            loss=_float(logs.get("loss")),
            learning_rate=_float(logs.get("learning_rate")),
            tokens_per_second=tokens_per_second,
            eval_loss=_float(logs.get("eval_loss")),
            epoch=_float(logs.get("epoch")),
            grad_norm=_float(logs.get("grad_norm")),
            reward_margin=_float(logs.get("rewards/margins")),
            reward_accuracy=_float(logs.get("rewards/accuracies")),
            eval_reward_margin=_float(logs.get("eval_rewards/margins")),
            peak_memory_mb=peak_memory_mb() if "loss" in logs else None,
            mfu=self._mfu(tokens_per_second),
            trainable_tokens=(
                self._trainable_tokens() if self._trainable_tokens and "loss" in logs else None
            ),
            kl=_float(logs.get("kl", logs.get("eval_kl"))),
            reward=_float(logs.get("reward")),
            reward_std=_float(logs.get("reward_std")),
            eval_reward=_float(logs.get("eval_reward")),
            eval_reward_std=_float(logs.get("eval_reward_std")),
            rewards=per_reward(logs, "rewards/"),
            eval_rewards=per_reward(logs, "eval_rewards/"),
        )
        if "loss" in logs:
            self.latest = metrics
        self._sink(metrics)

    def _mfu(self, tokens_per_second: float | None) -> float | None:
        """Model FLOPs utilisation: achieved training FLOP/s over the measured matmul peak."""
        if not (tokens_per_second and self._peak and self._flops_per_token):
            return None
        return round(tokens_per_second * self._flops_per_token / self._peak, 4)


class ProgressBar(TrainerCallback):  # type: ignore[misc]
    """A tqdm bar over optimizer steps showing loss, learning rate, tokens/s and ETA."""

    def __init__(self, metrics: MetricsForwarder) -> None:
        self._metrics = metrics
        self._bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=state.max_steps,
            desc="training",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is None:
            return
        self._bar.update(state.global_step - self._bar.n)
        latest = self._metrics.latest
        if latest is not None:
            postfix = {"loss": f"{latest.loss:.3f}" if latest.loss is not None else "-"}
            if latest.reward is not None:
                postfix["reward"] = f"{latest.reward:.3f}"
            if latest.learning_rate is not None:
                postfix["lr"] = f"{latest.learning_rate:.2e}"
            if latest.tokens_per_second is not None:
                postfix["tok/s"] = f"{latest.tokens_per_second:.0f}"
            if latest.mfu is not None:
                postfix["mfu"] = f"{latest.mfu:.0%}"
            self._bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def peak_memory_mb() -> float:
    """Peak accelerator memory on CUDA, else the process's peak resident memory, in MB."""
    import torch

    if torch.cuda.is_available():
        return round(float(torch.cuda.max_memory_allocated()) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KB on Linux


def per_reward(logs: dict[str, Any], prefix: str) -> tuple[tuple[str, float], ...]:
    """GRPO's mean of each reward function (`rewards/<name>/mean`), by name."""
    return tuple(
        (key[len(prefix) : -len("/mean")], float(value))
        for key, value in sorted(logs.items())
        if key.startswith(prefix) and key.endswith("/mean")
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
