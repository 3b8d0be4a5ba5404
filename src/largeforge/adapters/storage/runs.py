"""Runs on disk: `<root>/<run_id>/{config.yaml, run.json, metrics.jsonl, adapter/, merged/}`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from largeforge.domain.errors import ConfigError, LargeForgeError
from largeforge.domain.formats import DatasetFormat, DatasetSpec
from largeforge.domain.method_options import GrpoOptions, KtoOptions, OrpoOptions, SimpoOptions
from largeforge.domain.training import (
    DpoOptions,
    LoraSpec,
    RunState,
    StepMetrics,
    TrainingPlan,
    TrainingResult,
    TrainingRun,
)
from largeforge.domain.validation import Dedupe, OnError, TooLong, ValidationPolicy


def run_to_dict(run: TrainingRun) -> dict[str, Any]:
    """A JSON-ready view of a run."""
    data = asdict(run)
    data["state"] = run.state.value
    data["plan"]["lora"]["target_modules"] = list(run.plan.lora.target_modules)
    for spec in data["plan"]["datasets"]:
        spec["columns"] = [list(pair) for pair in spec["columns"]]
    for key in ("created_at", "started_at", "finished_at"):
        value = getattr(run, key)
        data[key] = value.isoformat() if value else None
    data["history"] = [{"state": s.value, "at": at.isoformat()} for s, at in run.history]
    data["duration_seconds"] = run.duration_seconds
    return data


def run_from_dict(data: Mapping[str, Any]) -> TrainingRun:
    """Rebuild a run from `run_to_dict` output."""
    plan_data = dict(data["plan"])
    lora_data = dict(plan_data.pop("lora"))
    lora_data["target_modules"] = tuple(lora_data["target_modules"])
    datasets = tuple(
        DatasetSpec(
            source=d["source"],
            format=DatasetFormat(d["format"]) if d.get("format") else None,
            columns=tuple(tuple(pair) for pair in d.get("columns", ())),
            weight=d.get("weight"),
            count=d.get("count"),
        )
        for d in plan_data.pop("datasets")
    )
    policy = plan_data.pop("validation")
    validation = ValidationPolicy(
        on_error=OnError(policy["on_error"]),
        max_skip_fraction=policy["max_skip_fraction"],
        dedupe=Dedupe(policy["dedupe"]),
        too_long=TooLong(policy["too_long"]),
        clean_text=policy["clean_text"],
    )
    dpo = dict(plan_data.pop("dpo", None) or {})
    for legacy in ("beta", "precompute_ref_log_probs"):  # run.json before the `dpo` group
        if f"dpo_{legacy}" in plan_data:
            dpo[legacy] = plan_data.pop(f"dpo_{legacy}")
    kto = KtoOptions(**plan_data.pop("kto", None) or {})
    orpo = OrpoOptions(**plan_data.pop("orpo", None) or {})
    simpo = SimpoOptions(**plan_data.pop("simpo", None) or {})
    grpo = GrpoOptions.from_dict(plan_data.pop("grpo", None) or {})
    plan = TrainingPlan(
        **plan_data,
        kto=kto,
        orpo=orpo,
        simpo=simpo,
        grpo=grpo,
        datasets=datasets,
        validation=validation,
        lora=LoraSpec(**lora_data),
        dpo=DpoOptions(**dpo),
    )

    def when(key: str) -> datetime | None:
        value = data.get(key)
        return datetime.fromisoformat(value) if value else None

    result = TrainingResult(**data["result"]) if data.get("result") else None
    history = tuple(
        (RunState(item["state"]), datetime.fromisoformat(item["at"]))
        for item in data.get("history", [])
    )
    return TrainingRun(
        run_id=data["run_id"],
        plan=plan,
        state=RunState(data["state"]),
        created_at=when("created_at"),
        started_at=when("started_at"),
        finished_at=when("finished_at"),
        error=data.get("error"),
        result=result,
        merged_dir=data.get("merged_dir"),
        history=history,
        config_fingerprint=data.get("config_fingerprint", ""),
        data_fingerprint=data.get("data_fingerprint", ""),
        resumes=data.get("resumes", 0),
    )


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


class FilesystemRunStore:
    """Stores each run in its own directory under `root`, and points `root/latest` at it."""

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root)

    def run_dir(self, run_id: str) -> str:
        return str(self._root / run_id)

    def create(self, run: TrainingRun, config: Mapping[str, Any]) -> str:
        directory = self._root / run.run_id
        if (directory / "run.json").exists():
            raise LargeForgeError(f"run directory already exists: {directory}")
        directory.mkdir(parents=True, exist_ok=True)
        plain = json.loads(json.dumps(dict(config), default=str))  # enums as their values
        _atomic_write(directory / "config.yaml", yaml.safe_dump(plain, sort_keys=False))
        self.save(run)
        latest = self._root / "latest"
        try:
            if latest.is_symlink() or not latest.exists():
                latest.unlink(missing_ok=True)
                latest.symlink_to(run.run_id, target_is_directory=True)
        except OSError:
            pass  # symlinks are a convenience (not on every filesystem)
        return str(directory)

    def save(self, run: TrainingRun) -> None:
        path = self._root / run.run_id / "run.json"
        _atomic_write(path, json.dumps(run_to_dict(run), indent=2) + "\n")

    def load(self, run_id: str) -> TrainingRun:
        path = self._root / run_id / "run.json"
        if not path.is_file():
            raise ConfigError(f"no run at {path.parent} (no run.json)")
        try:
            return run_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, ValueError) as exc:  # hand-edited or from another version
            reason = f"{type(exc).__name__}: {exc}"
            raise ConfigError(f"{path}: not a readable run record ({reason})") from exc

    def write_json(self, run_id: str, name: str, payload: Mapping[str, Any]) -> None:
        _atomic_write(self._root / run_id / name, json.dumps(payload, indent=2) + "\n")

    def write_report(self, run: TrainingRun) -> str:
        from largeforge.adapters.storage.report import write_report

        return str(write_report(run, self._root / run.run_id))

    def append_metrics(self, run_id: str, metrics: StepMetrics) -> None:
        path = self._root / run_id / "metrics.jsonl"
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics.as_dict()) + "\n")


class ReadOnlyRunStore:
    """Reads through to a store and writes nothing: the view of processes other than rank 0
    in a multi-process run, so that one process records the run."""

    def __init__(self, inner: FilesystemRunStore) -> None:
        self._inner = inner

    def run_dir(self, run_id: str) -> str:
        return self._inner.run_dir(run_id)

    def create(self, run: TrainingRun, config: Mapping[str, Any]) -> str:
        return self._inner.run_dir(run.run_id)

    def load(self, run_id: str) -> TrainingRun:
        return self._inner.load(run_id)

    def save(self, run: TrainingRun) -> None:
        pass

    def append_metrics(self, run_id: str, metrics: StepMetrics) -> None:
        pass

    def write_json(self, run_id: str, name: str, payload: Mapping[str, Any]) -> None:
        pass

    def write_report(self, run: TrainingRun) -> str:
        return str(Path(self._inner.run_dir(run.run_id)) / "report.md")


class SkipMerger:
    """The merger of processes other than rank 0: rank 0 merges."""

    def merge(self, base_dir: str, adapter_dir: str, output_dir: str) -> str:
        return output_dir
