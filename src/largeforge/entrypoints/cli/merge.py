"""`largeforge merge`: fold a run's LoRA adapter into its base model, verified."""

from __future__ import annotations

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
    from largeforge.config import Settings
    from largeforge.container import Container
    from largeforge.entrypoints.cli.fidelity import static_check_after

    adapter = run_dir / "adapter"
    container = Container.from_settings(Settings())
    run = container.run_reader(root=str(run_dir.parent)).load(run_dir.name)  # ConfigError if none
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{run_dir}: no LoRA adapter in {adapter}")
    base_dir = container.model_resolver().resolve(run.plan.model)
    merger = container.lora_merger(tolerance=tolerance)
    out = merger.merge(base_dir, str(adapter), str(output or run_dir / "merged"))
    print(
        f"max |logit difference| vs base + adapter: {merger.last_max_abs_diff:.3e} "
        f"(tolerance {tolerance:.0e})"
    )
    print(f"merged model: {out}")
    static_check_after(container, out, run_dir=run_dir, source_dir=base_dir)
    print(f"serve it with: largeforge serve --model {out}")
    return 0
