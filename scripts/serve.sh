#!/usr/bin/env bash
# Runs the service on this machine (embedded: SQLite, a broker with no server): prepares data, model and a
# quick-start adapter v1 when missing, migrates and bootstraps, then runs the API and a Celery worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec e2u serve "$@"
