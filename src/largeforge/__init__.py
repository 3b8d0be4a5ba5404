"""LargeForge: take an open LLM from data to a fine-tuned, quantized, routed and served model.

The public Python API (importing it does not import torch)::

    from largeforge import Container, RunConfig, Settings

    config = RunConfig(training={"max_steps": 20})
    container = Container.from_settings(Settings(run=config))
    outcome = container.run_training().execute(config.to_plan())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from largeforge.version import __version__

if TYPE_CHECKING:
    from largeforge.config import RunConfig, ServeSettings, Settings, load_run_config
    from largeforge.container import Container

__all__ = ["Container", "RunConfig", "ServeSettings", "Settings", "__version__", "load_run_config"]

_LAZY = {
    "Container": "largeforge.container",
    "RunConfig": "largeforge.config",
    "ServeSettings": "largeforge.config",
    "Settings": "largeforge.config",
    "load_run_config": "largeforge.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'largeforge' has no attribute {name!r}")
