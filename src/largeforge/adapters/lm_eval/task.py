"""`EvaluationTask` over lm-evaluation-harness: one harness task (by name, or a task YAML, or the
bundled `largeforge_facts`) scored in-process with the harness's Hugging Face model (`HFLM`).

Chat template: on by default for a model whose tokenizer has one (`apply_chat_template=None`),
as `lm_eval --apply_chat_template` does it (few-shot examples as turns). For a multiple-choice
(log-likelihood) task this changes the prompt: the question becomes a user turn followed by the
assistant header, and each choice is scored as the start of the reply *without* the task's
`target_delimiter` (no leading space). Scores therefore differ from a plain-prompt run and are
only comparable with runs made with the same setting (the `lm_eval` CLI's default is off: pass
`--apply_chat_template` there, or `apply_chat_template=False` here).

Offline: when the hub does not answer (a 3 s TCP probe) the datasets and hub libraries are put in
offline mode before the task loads, so a task whose data lives on the hub fails at once, with
one line naming the dataset, instead of waiting on network retries.
"""

from __future__ import annotations

import difflib
import functools
import gc
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from largeforge.adapters.lm_eval.results import scores_from_results
from largeforge.domain.errors import EvaluationError
from largeforge.domain.evaluation import ModelVariant, Score

log = structlog.get_logger(__name__)

#: tasks that ship with LargeForge (name -> YAML in largeforge.resources.lm_eval); offline.
BUNDLED_TASKS = {"largeforge_facts": "largeforge_facts.yaml"}
_HUB_ERRORS = (
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
    "DatasetNotFoundError",
    "HfHubHTTPError",
    "ConnectTimeout",
    "ConnectError",
)


@dataclass(frozen=True)
class _Resolved:
    """What to hand `TaskManager.load`: a registered name, a YAML path, or an inline config."""

    spec: str | dict[str, Any]
    defaults: bool  # whether the harness's own task index is needed
    datasets: tuple[str, ...]  # the dataset paths named by the config, for messages


class LmEvalTask:
    """One lm-evaluation-harness task: a harness task name (`hellaswag`), a task YAML
    (`path/to/task.yaml`), or a bundled task (`largeforge_facts`), scored per variant.

    `validate()` resolves the task and loads its data (no model): unknown names, missing or
    unparsable YAML files and data that would need the hub raise `EvaluationError`. `evaluate`
    validates first when that has not been done, loads the variant (base + PEFT adapter, float32
    on `device`), scores it and frees it.
    """

    def __init__(
        self,
        task: str,
        *,
        device: str = "cpu",
        apply_chat_template: bool | None = None,
        limit: int | None = None,
        batch_size: int = 8,
        bootstrap_iters: int = 100_000,
    ) -> None:
        task = task.strip()
        if not task:
            raise EvaluationError("lm-evaluation-harness: an empty task name")
        self._task = task
        self._device = device
        self._chat = apply_chat_template
        self._limit = limit
        self._batch_size = batch_size
        self._bootstrap_iters = bootstrap_iters
        self._resolved: _Resolved | None = None
        self._manager: Any = None

    @property
    def name(self) -> str:
        return f"lm:{self._task}"

    def validate(self) -> None:
        """Resolve the task and load its documents once; raise `EvaluationError` if it cannot
        run here. Loads no model."""
        if self._resolved is not None:
            return
        _offline_when_hub_unreachable()
        resolved = resolve_task(self._task)
        manager = _task_manager(resolved.defaults)
        _load_tasks(manager, resolved, self._task)  # fetches the documents: fail before a model
        self._resolved, self._manager = resolved, manager

    def evaluate(self, variant: ModelVariant) -> tuple[Score, ...]:
        self.validate()
        assert self._resolved is not None
        from lm_eval import simple_evaluate

        lm = _load_model(variant, self._device, self._batch_size)
        try:
            chat = self._chat
            if chat is None:
                chat = getattr(lm.tokenizer, "chat_template", None) is not None
            log.info(
                "lm_eval_start",
                task=self._task,
                variant=variant.name,
                apply_chat_template=chat,
                limit=self._limit,
            )
            results = simple_evaluate(  # loads the task again: its documents are cached
                model=lm,
                tasks=[self._resolved.spec],
                task_manager=self._manager,
                limit=self._limit,
                apply_chat_template=chat,
                fewshot_as_multiturn=chat,  # what `lm_eval --apply_chat_template` does
                bootstrap_iters=self._bootstrap_iters,
                log_samples=False,
            )
        finally:
            del lm
            _free_memory()
        if not results:
            raise EvaluationError(f"{self.name}: lm-evaluation-harness returned no results")
        scores = scores_from_results(results)
        if not scores:
            raise EvaluationError(f"{self.name}: lm-evaluation-harness reported no metrics")
        log.info(
            "lm_eval_done",
            task=self._task,
            variant=variant.name,
            **{f"{s.task}/{s.metric}": round(s.value, 4) for s in scores},
        )
        return scores


def resolve_task(task: str) -> _Resolved:
    """A bundled name, a task YAML path, or a registered harness name (else `EvaluationError`,
    with the closest names)."""
    if task in BUNDLED_TASKS:
        return _bundled(task)
    if task.endswith((".yaml", ".yml")) or os.sep in task or Path(task).is_file():
        return _yaml_file(task)
    manager = _task_manager(True)
    if task in manager.all_tasks:
        entry = manager.task_index[task]
        config = entry.cfg or {}
        return _Resolved(task, True, _dataset_paths(config))
    known = [*BUNDLED_TASKS, *manager.all_tasks]
    close = difflib.get_close_matches(task, known, n=3, cutoff=0.75)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    bundled = ", ".join(BUNDLED_TASKS)
    raise EvaluationError(
        f"unknown lm-evaluation-harness task {task!r}{hint}; bundled offline: {bundled}; "
        "or give a task YAML (lm:path/to/task.yaml)"
    )


def bundled_task_dir() -> Path:
    return Path(str(resources.files("largeforge.resources.lm_eval")))


def _bundled(task: str) -> _Resolved:
    """The bundled YAML as an inline config, its `data_files` made absolute (they are relative
    to the resource directory, wherever the package is installed)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    folder = bundled_task_dir()
    config = load_yaml(folder / BUNDLED_TASKS[task], resolve_func=True)
    kwargs = config.setdefault("dataset_kwargs", {})
    files = kwargs.get("data_files", {})
    kwargs["data_files"] = {split: str(folder / name) for split, name in files.items()}
    return _Resolved(config, False, ())


def _yaml_file(task: str) -> _Resolved:
    from lm_eval.tasks._yaml_loader import load_yaml

    path = Path(task).expanduser()
    if not path.is_file():
        raise EvaluationError(f"lm-evaluation-harness task file {task!r} does not exist")
    try:
        config = load_yaml(path, resolve_func=False)
    except Exception as exc:  # yaml errors, include cycles, a missing include
        raise EvaluationError(
            f"lm-evaluation-harness task file {task!r} does not parse: {_yaml_problem(exc)}"
        ) from exc
    if not (config.get("task") or config.get("group")):
        raise EvaluationError(
            f"lm-evaluation-harness task file {task!r} names no 'task' (or 'group')"
        )
    # a group lists other tasks by name: those need the harness's index
    defaults = "group" in config or isinstance(config.get("task"), list)
    return _Resolved(str(path.resolve()), defaults, _dataset_paths(config))


def _dataset_paths(config: Mapping[str, Any]) -> tuple[str, ...]:
    path = config.get("dataset_path")
    if not isinstance(path, str):
        return ()
    name = config.get("dataset_name")
    return (f"{path}/{name}" if isinstance(name, str) else path,)


@functools.lru_cache(maxsize=2)
def _task_manager(defaults: bool) -> Any:
    """The harness's task index (its ~15 000 YAML files take seconds to scan: built once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=defaults)


def _load_tasks(manager: Any, resolved: _Resolved, task: str) -> dict[str, Any]:
    """Build the harness's task objects (this reads their documents), errors as one line."""
    try:
        loaded: dict[str, Any] = manager.load([resolved.spec])
    except EvaluationError:
        raise
    except KeyError as exc:  # a group or YAML naming a task the index does not have
        raise EvaluationError(
            f"lm-evaluation-harness task {task!r}: {_one_line(exc).strip(chr(34))}"
        ) from exc
    except Exception as exc:
        if _needs_hub(exc):
            raise EvaluationError(_hub_message(task, resolved, exc)) from exc
        raise EvaluationError(
            f"lm-evaluation-harness task {task!r} cannot load its data: {_one_line(exc)}"
        ) from exc
    if not loaded.get("tasks"):
        raise EvaluationError(f"lm-evaluation-harness task {task!r} holds no tasks")
    return loaded


def _needs_hub(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError) or type(current).__name__ in _HUB_ERRORS:
            return True
        current = current.__cause__ or current.__context__
    return False


def _hub_message(task: str, resolved: _Resolved, exc: BaseException) -> str:
    found = re.search(r"reach '([^']+)'", str(exc))
    datasets = resolved.datasets or ((found.group(1),) if found else ())
    named = f" {', '.join(repr(d) for d in datasets)}" if datasets else ""
    return (
        f"lm-evaluation-harness task {task!r} needs the dataset{named} from the Hugging Face "
        "hub, which is not reachable (offline): run it with the hub reachable or the dataset "
        "cached, or use a task YAML with local data (lm:FILE.yaml) or the bundled "
        f"{', '.join(repr(b) for b in BUNDLED_TASKS)}"
    )


def _offline_when_hub_unreachable() -> None:
    """Put the hub and datasets libraries in offline mode when the hub does not answer, so
    nothing waits on network retries. Also patches their already-imported settings."""
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        _patch_offline_constants()
        return
    from largeforge.adapters.models.resolver import hub_reachable

    if hub_reachable(3.0):
        return
    log.info("hub_unreachable_offline_mode")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    _patch_offline_constants()


def _patch_offline_constants() -> None:
    offline = os.environ.get("HF_HUB_OFFLINE", os.environ.get("HF_DATASETS_OFFLINE", ""))
    if offline.upper() not in {"1", "ON", "YES", "TRUE"}:
        return
    settings = {
        "huggingface_hub.constants": ("HF_HUB_OFFLINE",),
        "datasets.config": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"),
    }
    for module_name, names in settings.items():
        module = sys.modules.get(module_name)  # read once at import: set the copies too
        for name in names if module is not None else ():
            setattr(module, name, True)


def _load_model(variant: ModelVariant, device: str, batch_size: int) -> Any:
    """The harness's HF model for a variant: float32 (a compressed-tensors directory is
    decompressed by transformers), the PEFT adapter applied on top when there is one, with the
    tokenizer training saved beside the adapter (its chat template) when there is one."""
    from lm_eval.models.huggingface import HFLM

    tokenizer = variant.model_dir
    if variant.adapter_dir and (Path(variant.adapter_dir) / "tokenizer_config.json").is_file():
        tokenizer = variant.adapter_dir
    try:
        return HFLM(
            pretrained=variant.model_dir,
            peft=variant.adapter_dir,
            tokenizer=tokenizer,
            device=device,
            dtype="float32",
            batch_size=batch_size,
            trust_remote_code=False,
        )
    except (OSError, ValueError) as exc:
        raise EvaluationError(
            f"{variant.name}: the model in {variant.model_dir} does not load for "
            f"lm-evaluation-harness: {_one_line(exc)}"
        ) from exc


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _yaml_problem(exc: BaseException) -> str:
    """`expected ',' or ']', but got '<stream end>' (line 3, column 1)` for a YAML error."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if isinstance(problem, str) and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
