"""`largeforge run-training`: the main job."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal

from largeforge.config import Settings, load_run_config
from largeforge.domain.errors import ConfigError


def run_training(
    config: Path | None = None,
    /,
    *,
    max_steps: int | None = None,
    output: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
    name: str | None = None,
    resume: bool = False,
    force: bool = False,
    nproc: int = 1,
    precision: Literal["auto", "fp32", "bf16"] | None = None,
) -> int:
    """Fine-tune a LoRA adapter, merge it, and record the run.

    With no CONFIG it trains on the embedded SmolLM2-135M-Instruct model and the bundled
    sample data.

    Parameters
    ----------
    config
        YAML run file; every key is optional.
    max_steps
        Optimizer steps (overrides training.max_steps).
    output
        Parent directory of run directories (overrides output_dir).
    model
        Model alias, local directory or Hugging Face id (overrides model).
    dataset
        Dataset .jsonl file, or 'sample' (overrides dataset).
    name
        Run directory name (default: timestamped).
    resume
        Continue the run named by --name / `name:` (default: OUTPUT/latest) from its latest
        complete checkpoint.
    force
        With --resume, continue even though the config or the data changed.
    nproc
        Processes to train with (torchrun; DDP over gloo on CPUs, nccl on GPUs).
    precision
        auto, fp32 or bf16 (overrides training.precision; auto: bf16 where the device has it).
    """
    from largeforge.container import Container

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        return _launch(
            nproc, config, max_steps, output, model, dataset, name, resume, force, precision
        )
    _sigterm_interrupts()
    run_config = load_run_config(
        config,
        {
            "training.max_steps": max_steps,
            "training.precision": precision,
            "output_dir": output,
            "model": model,
            "dataset": dataset,
            "name": name,
        },
    )
    rank = int(os.environ.get("RANK", "0"))
    container = Container.from_settings(Settings(run=run_config, process_rank=rank))
    use_case = container.run_training()
    if resume:
        run_id = run_config.name or _latest_run(Path(run_config.output_dir))
        outcome = use_case.resume(run_id, run_config.to_plan(), force=force)
    else:
        outcome = use_case.execute(
            run_config.to_plan(), config=run_config.model_dump(mode="json"), run_id=run_config.name
        )
    if rank > 0:
        return 0
    result = outcome.run.result
    print(f"\nrun {outcome.run.run_id}: {outcome.run.state.value}", file=sys.stdout)
    print(f"  run directory: {outcome.run_dir}")
    if result is not None:
        print(f"  steps: {result.steps}  train loss: {_fmt(result.train_loss)}")
        print(f"  eval loss: {_fmt(result.eval_loss_before)} -> {_fmt(result.eval_loss_after)}")
        if result.eval_reward_margin_after is not None:
            print(
                f"  eval reward margin: {_fmt(result.eval_reward_margin_before)} -> "
                f"{_fmt(result.eval_reward_margin_after)}"
            )
        if result.eval_reward_after is not None:
            print(
                f"  eval reward: {_fmt(result.eval_reward_before)} -> "
                f"{_fmt(result.eval_reward_after)}"
            )
        kind = "model" if outcome.run.plan.adapter.writes_whole_model else "adapter"
        print(f"  {kind}: {result.adapter_dir}")
    if outcome.run.merged_dir:
        print(f"  merged model: {outcome.run.merged_dir}")
        print("\nServe it with:")
        print(f"  largeforge serve --model {shlex.quote(outcome.run.merged_dir)}")
    if run_config.eval is None:
        return 0
    from largeforge.entrypoints.cli.evaluate import run_eval

    print("\nEvaluating (the run file's eval: section):", flush=True)
    return run_eval(
        outcome.run_dir,
        tasks=run_config.eval.tasks,
        compare=run_config.eval.compare,
        fidelity=run_config.eval.fidelity,
    )


def _launch(
    nproc: int,
    config: Path | None,
    max_steps: int | None,
    output: str | None,
    model: str | None,
    dataset: str | None,
    name: str | None,
    resume: bool,
    force: bool,
    precision: Literal["auto", "fp32", "bf16"] | None = None,
) -> int:
    """Re-run this command under torchrun with `nproc` processes sharing one run name."""
    from largeforge.container import Container

    if name is None and not resume:
        name = Container.from_settings(Settings()).run_training().new_run_id()
    args = [str(config)] if config else []
    for flag, value in (
        ("--max-steps", max_steps),
        ("--output", output),
        ("--model", model),
        ("--dataset", dataset),
        ("--name", name),
        ("--precision", precision),
    ):
        if value is not None:
            args += [flag, str(value)]
    args += ["--resume"] if resume else []
    args += ["--force"] if force else []
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "largeforge.entrypoints.cli.main",
        "run-training",
        *args,
    ]
    print(f"launching {nproc} processes: {shlex.join(command)}", file=sys.stderr)
    completed = subprocess.run(command, check=False)
    return 2 if completed.returncode == 2 else completed.returncode


def _latest_run(output_dir: Path) -> str:
    latest = output_dir / "latest"
    if not latest.exists():
        raise ConfigError(f"nothing to resume: no runs in {output_dir} (name one with --name)")
    return latest.resolve().name


def _sigterm_interrupts() -> None:
    """Treat SIGTERM like Ctrl-C, so a killed run is recorded as interrupted, not lost."""

    from largeforge.container import StopRequested, stop_requested

    def handler(signum: int, frame: object) -> None:
        stop_requested.set()  # honoured between training steps even if the raise is swallowed
        raise StopRequested(f"signal {signum}")

    with contextlib.suppress(ValueError):  # not in the main thread (embedded use)
        signal.signal(signal.SIGTERM, handler)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
