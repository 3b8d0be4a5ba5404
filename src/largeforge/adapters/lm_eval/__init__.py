"""lm-evaluation-harness tasks as `EvaluationTask`s (the harness is imported lazily)."""

from largeforge.adapters.lm_eval.task import BUNDLED_TASKS, LmEvalTask, bundled_task_dir

__all__ = ["BUNDLED_TASKS", "LmEvalTask", "bundled_task_dir"]
