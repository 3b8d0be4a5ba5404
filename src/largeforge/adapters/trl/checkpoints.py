"""Checkpoints: saved atomically (staged, fsynced, renamed) and resumed from the latest
complete one."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import structlog

from largeforge.domain.errors import TrainingError

log = structlog.get_logger(__name__)

STAGING = ".staging"
COMPLETE_MARKER = "trainer_state.json"  # written last by the Trainer
KILL_HOOK = "LARGEFORGE_TEST_KILL_DURING_SAVE"
"""Crash tests set it to "STEP:PHASE" to SIGKILL the process at that point of a save."""


def latest_checkpoint(root: Path) -> str | None:
    """The highest-step complete `checkpoint-N` under `root` (staged saves are ignored)."""
    if not root.is_dir():
        return None
    found = []
    for path in root.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / COMPLETE_MARKER).is_file():
            found.append((int(suffix), path))
    return str(max(found)[1]) if found else None


def train_from_checkpoint(trainer: Any, resume: bool) -> Any:
    """Train, from the latest complete checkpoint when `resume` (from step 0 if there is none)."""
    checkpoint = None
    if resume:
        checkpoint = latest_checkpoint(Path(trainer.args.output_dir))
        if checkpoint is None:
            log.warning("no_checkpoint", detail="nothing saved yet: training from step 0")
        else:
            log.info("resuming", checkpoint=checkpoint)
    try:
        return trainer.train(resume_from_checkpoint=checkpoint)
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"training failed: {exc}") from exc


def kill_if_asked(step: int, phase: str) -> None:
    """The crash tests' hook: SIGKILL this process at `phase` of saving checkpoint `step`."""
    if os.environ.get(KILL_HOOK) == f"{step}:{phase}":
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_tree(root: Path) -> None:
    """Flush every file under `root`, then the directories, to the disk."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        _fsync(path, directory=path.is_dir())
    _fsync(root, directory=True)


def _fsync(path: Path, *, directory: bool) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointsMixin:
    """Save each checkpoint into `<output>/.staging/`, flush it, and rename it into place.

    A kill during a save leaves at most a staging directory, which the next save removes; a
    `checkpoint-N` directory under the output directory is always whole.
    """

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        trainer: Any = self
        main = bool(trainer.args.should_save)  # process 0 renames; every process saves its RNG
        final_root = Path(trainer._get_output_dir(trial=trial))
        staging = final_root / STAGING
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        trainer._get_output_dir = lambda trial=None: str(staging)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            del trainer._get_output_dir
        trainer.accelerator.wait_for_everyone()
        if main:
            self._publish(trainer, final_root, staging)
        trainer.accelerator.wait_for_everyone()

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]
        kill_if_asked(self.state.global_step, "optimizer")  # type: ignore[attr-defined]

    @staticmethod
    def _publish(trainer: Any, final_root: Path, staging: Path) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        step = trainer.state.global_step
        name = f"checkpoint-{step}"
        staged, target = staging / name, final_root / name
        _unstage_best(trainer, staged, final_root)
        fsync_tree(staged)
        kill_if_asked(step, "publish")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
        _fsync(final_root, directory=True)
        shutil.rmtree(staging, ignore_errors=True)
        rotate_checkpoints(
            output_dir=str(final_root),
            save_total_limit=trainer.args.save_total_limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint,
            use_mtime=False,
        )


def _unstage_best(trainer: Any, staged: Path, final_root: Path) -> None:
    """Point the best checkpoint (in memory and in the staged state file) at its final path."""
    best = trainer.state.best_model_checkpoint
    if not best:
        return
    trainer.state.best_model_checkpoint = str(final_root / Path(best).name)
    state_file = staged / COMPLETE_MARKER
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        state["best_model_checkpoint"] = trainer.state.best_model_checkpoint
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", "utf-8")
