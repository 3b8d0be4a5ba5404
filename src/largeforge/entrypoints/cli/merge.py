"""`largeforge merge`: fold a run's LoRA adapter into its base model, verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from largeforge.domain.errors import ConfigError


def merge(
    run_dir: Path,
    /,
    *,
    output: Annotated[Path | None, Parameter(name=["--output", "-o"])] = None,
    tolerance: float = 1e-3,
) -> int:
    """Merge RUN_DIR/adapter into the run's base model and check the logits match.

    Prints the largest logit difference between the merged model and base + adapter, and fails
    past the tolerance. The tokenizer, chat template and generation config are saved with it.

    Parameters
    ----------
    run_dir
        A run directory (with run.json and adapter/).
    output
        Where to write the merged model (default: RUN_DIR/merged).
    tolerance
        Largest accepted absolute logit difference.
    """
    from largeforge.adapters.peft.merge import PeftLoraMerger
    from largeforge.config import Settings
    from largeforge.container import Container

    run_file = run_dir / "run.json"
    adapter = run_dir / "adapter"
    if not run_file.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no run.json)")
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{run_dir}: no LoRA adapter in {adapter}")
    model_ref = json.loads(run_file.read_text(encoding="utf-8"))["plan"]["model"]
    base_dir = Container.from_settings(Settings()).model_resolver().resolve(model_ref)
    merger = PeftLoraMerger(tolerance=tolerance)
    out = merger.merge(base_dir, str(adapter), str(output or run_dir / "merged"))
    print(
        f"max |logit difference| vs base + adapter: {merger.last_max_abs_diff:.3e} "
        f"(tolerance {tolerance:.0e})"
    )
    print(f"merged model: {out}")
    print(f"serve it with: largeforge serve --model {out}")
    return 0
