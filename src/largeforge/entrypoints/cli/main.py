"""The `largeforge` command. Heavy commands are registered lazily so `--help` stays fast."""

from __future__ import annotations

import os
import sys

from cyclopts import App
from cyclopts.exceptions import CycloptsError

from largeforge.domain.errors import (
    ConfigError,
    DatasetError,
    LargeForgeError,
    ModelNotFoundError,
)
from largeforge.version import __version__

app = App(
    name="largeforge",
    help="From data to a fine-tuned, quantized, routed and served open LLM.",
    version=__version__,
)
# Lazy ("module:function") so that `largeforge --help` does not import torch.
app.command(
    "largeforge.entrypoints.cli.training:run_training",
    name="run-training",
    help="Fine-tune a LoRA adapter (default: embedded SmolLM2 + bundled sample data), then merge.",
)
app.command(
    "largeforge.entrypoints.cli.serve:serve",
    name="serve",
    help="Serve a model over an OpenAI-compatible HTTP API.",
)
app.command(
    "largeforge.entrypoints.cli.merge:merge",
    name="merge",
    help="Merge a run's LoRA adapter into its base model, checking the logits match.",
)
app.command(
    "largeforge.entrypoints.cli.evaluate:evaluate",
    name="eval",
    help="Score base, adapter, merged and quantized models on the same tasks, with intervals.",
)
data_app = App(name="data", help="Validate, preview and convert datasets.")
data_app.command(
    "largeforge.entrypoints.cli.data:validate",
    name="validate",
    help="Check every row of a dataset; exit 1 past the validation policy.",
)
data_app.command(
    "largeforge.entrypoints.cli.data:preview",
    name="preview",
    help="Show examples rendered with the chat template and which tokens are trained.",
)
data_app.command(
    "largeforge.entrypoints.cli.data:convert",
    name="convert",
    help="Rewrite a dataset as messages, alpaca or sharegpt JSON Lines.",
)
generate_app = App(
    name="generate", help="Generate synthetic SFT, preference or tool-use data with a model."
)
generate_app.command(
    "largeforge.entrypoints.cli.data:generate_sft",
    name="sft",
    help="New instruction/response pairs from seed tasks (self-instruct).",
)
generate_app.command(
    "largeforge.entrypoints.cli.data:generate_preferences",
    name="preferences",
    help="prompt/chosen/rejected pairs ranked by the model's own likelihood.",
)
generate_app.command(
    "largeforge.entrypoints.cli.generate_tools:generate_tools",
    name="tools",
    help="Tool-use conversations whose calls the grammar keeps valid for each tool's schema.",
)
data_app.command(generate_app)
app.command(data_app)
app.command(
    "largeforge.entrypoints.cli.quantize:quantize",
    name="quantize",
    help="Quantize a model with AWQ or GPTQ; report size and perplexity before and after.",
)
route_app = App(name="route", help="Route queries to expert models: serve, explain, evaluate.")
route_app.command(
    "largeforge.entrypoints.cli.route:serve",
    name="serve",
    help="Serve the router: one OpenAI-compatible endpoint in front of the experts.",
)
route_app.command(
    "largeforge.entrypoints.cli.route:explain",
    name="explain",
    help="Show every expert's scores for a query and the route taken.",
)
route_app.command(
    "largeforge.entrypoints.cli.route:evaluate",
    name="eval",
    help="Accuracy, precision/recall and confusion matrix on a labelled JSONL file.",
)
route_app.command(
    "largeforge.entrypoints.cli.route:calibrate",
    name="calibrate",
    help="Per-expert embedding thresholds that maximise accuracy on a labelled file.",
)
app.command(route_app)
app.command(
    "largeforge.entrypoints.cli.doctor:doctor",
    name="doctor",
    help="Check Python, torch, the device, dependencies and the default model.",
)

EXIT_USAGE = 2
"""Exit code for bad input: options, config, data, model references."""

EXIT_BUG = 70
"""Exit code for an unexpected error (EX_SOFTWARE): a bug, reported in one line."""

_INPUT_ERRORS = (ConfigError, DatasetError, ModelNotFoundError)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; LargeForge errors become one line on stderr and an exit code."""
    from largeforge.entrypoints.logs import configure_logging

    configure_logging()
    tokens = sys.argv[1:] if argv is None else argv
    try:
        result = app(tokens, exit_on_error=False, result_action="return_value")
    except CycloptsError:
        return EXIT_USAGE  # cyclopts has already printed what was wrong
    except LargeForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, _INPUT_ERRORS) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `largeforge data validate x --json | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug, not bad input: one line, the traceback only on request
        if os.environ.get("LARGEFORGE_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (a bug in LargeForge; rerun with "
            "LARGEFORGE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_BUG
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
