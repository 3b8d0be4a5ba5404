"""`TokenizerFacts` of a model directory, and the records a run keeps of them.

The tokenizer is loaded with `AutoTokenizer` (its template, bos/eos/pad tokens and the token
that ends an assistant turn); the special tokens come from tokenizer.json's `added_tokens`, and
generation_config.json and config.json are read as the files are, so a planted or stale file is
seen exactly as another engine would see it (transformers silently re-adds a special token that
tokenizer_config.json names but tokenizer.json lost; vLLM and llama.cpp would not).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from largeforge.domain.errors import ConfigError
from largeforge.domain.fidelity import TokenizerFacts, token_ids

#: The file in a run directory that records the facts of the tokenizer training used.
RECORD = "tokenizer_facts.json"
#: The assistant content rendered to find the token that ends a turn.
PROBE_CONTENT = "Fidelity probe answer."


class HfTokenizerFactsReader:
    """The `TokenizerFactsReader` port over transformers and the files of a model directory."""

    def read(self, model_dir: str) -> TokenizerFacts:
        path = Path(model_dir)
        tokenizer = _load_tokenizer(path)
        generation = _read_json(path / "generation_config.json")
        config = _read_json(path / "config.json")
        gen_eos = token_ids(generation.get("eos_token_id"))
        config_eos = token_ids(config.get("eos_token_id"))
        gen_pad = generation.get("pad_token_id")
        gen_bos = generation.get("bos_token_id")
        turn_end = _turn_end(tokenizer)
        mentioned = {*gen_eos, *config_eos, gen_pad, gen_bos} - {None}
        vocab = len(tokenizer)
        names = tuple(
            (i, str(tokenizer.convert_ids_to_tokens(i)))
            for i in sorted(int(m) for m in mentioned)  # type: ignore[arg-type]
            if 0 <= i < vocab
        )
        template = tokenizer.chat_template
        return TokenizerFacts(
            chat_template=template if isinstance(template, str) else _json_or_none(template),
            bos_token=tokenizer.bos_token,
            bos_token_id=tokenizer.bos_token_id,
            eos_token=tokenizer.eos_token,
            eos_token_id=tokenizer.eos_token_id,
            pad_token=tokenizer.pad_token,
            pad_token_id=tokenizer.pad_token_id,
            special_tokens=_special_tokens(path, tokenizer),
            turn_end_token=turn_end[0] if turn_end else None,
            turn_end_token_id=turn_end[1] if turn_end else None,
            generation_eos_token_ids=gen_eos,
            generation_pad_token_id=gen_pad,
            generation_bos_token_id=gen_bos,
            config_eos_token_ids=config_eos,
            token_names=names,
        )

    def recorded(self, run_dir: str) -> TokenizerFacts | None:
        path = Path(run_dir) / RECORD
        if not path.is_file():
            return None
        return TokenizerFacts.from_dict(_read_json(path))

    def artifacts(self, run_dir: str) -> list[str]:
        """merged/ (when it holds a model), then every quantized model directly in the run."""
        root = Path(run_dir)
        found: list[str] = []
        if (root / "merged" / "config.json").is_file():
            found.append(str(root / "merged"))
        for child in sorted(root.iterdir()) if root.is_dir() else []:
            config = child / "config.json"
            quantized = config.is_file() and "quantization_config" in _read_json(config)
            if child.name != "merged" and quantized:
                found.append(str(child))
        return found

    def adapter_dir(self, run_dir: str) -> str | None:
        adapter = Path(run_dir) / "adapter"
        return str(adapter) if (adapter / "adapter_config.json").is_file() else None


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    if not path.is_dir():
        raise ConfigError(f"{path}: not a model directory")
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: cannot load its tokenizer ({reason})") from None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _special_tokens(path: Path, tokenizer: Any) -> tuple[tuple[str, int], ...]:
    """Special added tokens as tokenizer.json lists them (the tokenizer's own view when the
    directory has no tokenizer.json)."""
    file = path / "tokenizer.json"
    if file.is_file():
        added = _read_json(file).get("added_tokens") or []
        pairs = {(str(t["content"]), int(t["id"])) for t in added if t.get("special")}
    else:
        pairs = {
            (str(token.content), int(i))
            for i, token in tokenizer.added_tokens_decoder.items()
            if getattr(token, "special", False)
        }
    return tuple(sorted(pairs, key=lambda item: (item[1], item[0])))


def _turn_end(tokenizer: Any) -> tuple[str, int] | None:
    """The first special token the chat template writes after an assistant's content."""
    if not tokenizer.chat_template:
        return None
    conversation = [
        {"role": "user", "content": "Fidelity probe question?"},
        {"role": "assistant", "content": PROBE_CONTENT},
    ]
    try:
        text = str(tokenizer.apply_chat_template(conversation, tokenize=False))
    except Exception:  # a template that refuses this conversation shows no turn end
        return None
    at = text.rfind(PROBE_CONTENT)
    if at < 0:
        return None
    rest = text[at + len(PROBE_CONTENT) :]
    special = set(tokenizer.all_special_ids) | {
        int(i) for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
    }
    for token_id in tokenizer(rest, add_special_tokens=False)["input_ids"]:
        if int(token_id) in special:
            return str(tokenizer.convert_ids_to_tokens(int(token_id))), int(token_id)
    return None
