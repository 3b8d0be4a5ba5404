"""The LoRA rank vLLM must reserve, read from each adapter's own `adapter_config.json`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from largeforge.domain.errors import ConfigError


def adapter_rank(name: str, path: str) -> int:
    """The highest rank of adapter `name`: its `r`, or a larger one from its `rank_pattern`."""
    config = Path(path) / "adapter_config.json"
    where = f"LoRA adapter '{name}'"
    try:
        data = json.loads(config.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: {config} does not exist (is {path} a PEFT adapter?)") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {config}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: {config} is not JSON ({exc.msg}, line {exc.lineno})") from None
    rank = data.get("r") if isinstance(data, dict) else None
    pattern = data.get("rank_pattern") if isinstance(data, dict) else None
    ranks: list[int] = []
    for value in (rank, *(pattern.values() if isinstance(pattern, dict) else ())):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: {config} has no valid LoRA rank 'r' ({value!r})")
        ranks.append(value)
    return max(ranks)


def max_lora_rank(adapters: Mapping[str, str], allowed: Sequence[int]) -> int:
    """The smallest rank vLLM allows (`allowed`, ascending) that fits every adapter."""
    highest = max(adapter_rank(name, path) for name, path in adapters.items())
    for rank in sorted(allowed):
        if rank >= highest:
            return rank
    raise ConfigError(f"LoRA rank {highest} is above the largest vLLM supports ({max(allowed)})")
