"""`RunFiles`: what a run directory holds (run.json, adapter, merged and quantized models)."""

from __future__ import annotations

import json
from pathlib import Path

from largeforge.adapters.storage.runs import FilesystemRunStore
from largeforge.application.eval_plan import QuantizedModel
from largeforge.domain.training import TrainingRun


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "config.json").is_file() or (path / "adapter_config.json").is_file()
    )


class FilesystemRunFiles:
    """Reads run directories made by `FilesystemRunStore`; `runs/latest` is followed."""

    def run_dir(self, ref: str) -> str | None:
        path = Path(ref)
        if path.is_dir() and (path / "run.json").is_file():
            return str(path.resolve())
        return None

    def load(self, run_dir: str) -> TrainingRun:
        path = Path(run_dir)
        return FilesystemRunStore(str(path.parent)).load(path.name)

    def locate(self, run_dir: str, recorded: str) -> str | None:
        as_recorded = Path(recorded)
        if as_recorded.is_absolute() and _is_model_dir(as_recorded):
            return str(as_recorded)
        inside = Path(run_dir) / as_recorded.name
        if _is_model_dir(inside):
            return str(inside)
        return str(as_recorded.resolve()) if _is_model_dir(as_recorded) else None

    def quantized(self, run_dir: str) -> list[QuantizedModel]:
        """Every directory in the run with a quantization report (`largeforge quantize`)."""
        found = []
        for child in sorted(Path(run_dir).iterdir()):
            report = child / "quantization_report.json"
            if not (child.is_dir() and report.is_file() and _is_model_dir(child)):
                continue
            try:
                source = json.loads(report.read_text(encoding="utf-8")).get("source_model")
            except (OSError, ValueError):
                source = None
            found.append(QuantizedModel(child.name, str(child), source))
        return found
