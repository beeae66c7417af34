#!/usr/bin/env bash
# Runs the service on this machine. For now: prepares data, converts the model and trains a quick-start
# adapter v1 when they are missing (later starts reuse them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec e2u serve "$@"
