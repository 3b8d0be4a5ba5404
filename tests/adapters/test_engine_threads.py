"""The engine loads its model with one torch thread on the calling thread (so that thread
starts no OpenMP team of its own) and computes with the process's thread count on its
scheduler thread; the caller's count is given back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from largeforge.adapters.hf import inference
from largeforge.adapters.hf.inference import TransformersInferenceEngine
from largeforge.adapters.hf.threads import serial_here


def test_serial_here_gives_the_count_back() -> None:
    before = torch.get_num_threads()
    with serial_here() as threads:
        assert torch.get_num_threads() == 1
        assert threads == before
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", [1, 2])
def test_the_model_loads_serially_and_computes_with_the_callers_count(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    seen: list[int] = []
    load = inference._load

    def recording_load(*args: Any) -> Any:
        seen.append(torch.get_num_threads())
        return load(*args)

    monkeypatch.setattr(inference, "_load", recording_load)
    engine = TransformersInferenceEngine(str(tiny_model_dir), "t", device="cpu")
    try:
        assert seen == [1]
        assert torch.get_num_threads() == threads
        assert engine._batcher.call(torch.get_num_threads).result(timeout=60) == threads
    finally:
        engine.close()
        torch.set_num_threads(before)
