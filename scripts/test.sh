#!/usr/bin/env bash
# The test command: sets up .venv if needed, then runs the default (fast, CPU) test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest "$@"
