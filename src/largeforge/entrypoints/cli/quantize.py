"""`largeforge quantize`: AWQ or GPTQ, checked by perplexity before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from cyclopts import Parameter

from largeforge.config import DEFAULT_DATASET, DEFAULT_MODEL


def quantize(
    model: str = DEFAULT_MODEL,
    *,
    method: Literal["awq", "gptq"] = "awq",
    bits: Literal[4, 8] = 4,
    group_size: Literal["auto"] | int = "auto",
    symmetric: bool = False,
    ignore: list[str] | None = None,
    calibration: str = DEFAULT_DATASET,
    samples: int | None = None,
    max_seq_length: int = 512,
    output: Annotated[Path | None, Parameter(name=["--output", "-o"])] = None,
    check_only: bool = False,
) -> int:
    """Quantize a model's linear layers to 4 (or 8) bits with AWQ or GPTQ (llm-compressor),
    calibrated on a dataset, then report size and held-out perplexity before and after.

    The output is a compressed-tensors checkpoint that `largeforge serve` (transformers) and
    vLLM load. Bad options (a group size that does not divide a layer, an unknown method, a
    missing engine) fail before the model is loaded.

    Parameters
    ----------
    model
        Model alias, local directory (e.g. runs/latest/merged) or Hugging Face id.
    method
        awq or gptq. (auto-gptq is unmaintained and does not run with transformers 5; GPTQ
        here is llm-compressor's, AWQ likewise replaces the deprecated AutoAWQ.)
    bits
        Weight bits: 4 (W4A16) or 8 (W8A16).
    group_size
        Columns sharing one scale: auto (the largest of 128, 64, 32 that divides every
        quantized layer's input width; said in the report), a number that divides every such
        width (SmolLM2: 32 or 64; 32 fits its weights best), or -1 for one scale per output
        channel.
    symmetric
        Symmetric quantization (no zero point). The default, asymmetric, keeps small models
        closer to the original (SmolLM2-135M, GPTQ at group 64: perplexity x1.22 against x1.47).
    ignore
        Layers left unquantized (names, suffixes, or re:PATTERN); default lm_head.
    calibration
        Dataset for calibration (any format `largeforge data validate` reads; default: the
        bundled sample data), rendered with the chat template.
    samples
        Calibration samples (default: 64 for GPTQ, 16 for AWQ, which run in minutes on a CPU;
        llm-compressor suggests 256-512 on a GPU).
    max_seq_length
        Tokens per calibration sample.
    output
        Output directory (default: a run's merged model goes to RUN/quantized-METHOD-wBITS,
        where `largeforge eval RUN` finds it; any other model to MODELNAME-METHOD-wBITS in the
        current directory).
    check_only
        Run the pre-checks only.
    """
    from largeforge.container import Container
    from largeforge.domain.quantization import (
        DEFAULT_SAMPLES,
        QuantizationMethod,
        QuantizationSpec,
    )
    from largeforge.entrypoints.cli.fidelity import static_check_after

    chosen = QuantizationMethod(method)
    spec = QuantizationSpec(
        method=chosen,
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
        ignore=tuple(ignore) if ignore else ("lm_head",),
        num_samples=samples or DEFAULT_SAMPLES[chosen],
        max_seq_length=max_seq_length,
    )
    out = output or _default_output(Path(model), method, bits)
    container = Container.from_settings()
    use_case = container.quantize_model()
    if check_only:
        checked = use_case.check(model, spec, str(out))
        print(f"ok: {method} with {checked.quantizer.engine}, group size {checked.group_size_text}")
        return 0
    report = use_case.execute(model, spec, str(out), calibration=calibration)
    print(report.to_markdown())
    source = container.model_resolver().resolve(model)
    static_check_after(container, str(out), source_dir=source)
    return 0


def _default_output(model: Path, method: str, bits: int) -> Path:
    """Inside the run for a run's model (`RUN/merged`), else beside the current directory."""
    if model.is_dir() and (model.parent / "run.json").is_file():
        return model.parent / f"quantized-{method}-w{bits}"
    return Path(f"{model.name}-{method}-w{bits}")
