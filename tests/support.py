"""Builders for test models: a tiny random Llama around the real SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(out: Path, seed: int = 0, head_dim: int = 16) -> Path:
    """Save a 2-layer, hidden-64 Llama with SmolLM2's tokenizer and chat template to `out`.

    vLLM's CPU attention needs `head_dim` 32 or more (a multiple of 16): pass 64 for it.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from largeforge.adapters.models.resolver import packaged_tokenizer

    tokenizer = packaged_tokenizer("smollm2-135m-instruct")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_adapter(
    model_dir: Path, out: Path, seed: int = 1, rank: int = 4, alpha: int = 8
) -> Path:
    """Save a LoRA adapter for the tiny model whose weights change its outputs (B is not zero)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["q_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return out
