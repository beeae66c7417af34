#!/usr/bin/env bash
# Python 3.12 without torch (its CPU wheel for 3.12 is not on the dev/CI disk): a 3.12 environment with the
# database and settings dependencies from the package index, the wheel built from this checkout installed
# into it (pip checks requires-python), its migrations applied to an empty SQLite file, and the tests that
# need no torch run on 3.12 (settings and secret files, the compose file).  Needs the package index.
#   bash scripts/check-python312.sh [/path/to/python3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${1:-/root/.pyenv/versions/3.12.1/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY312" -m venv "$work/venv"
"$work/venv/bin/pip" install -q sqlalchemy alembic "psycopg[binary]" pydantic pydantic-settings cryptography \
  pytest pyyaml "check-jsonschema>=0.39" packaging
# built from a copy of the working tree: building in place would leave build/ and *.egg-info behind
mkdir "$work/src" && git ls-files -co --exclude-standard | grep -v '^\.venv$' | tar -cf - -T - | tar -xf - -C "$work/src"
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$work/dist" "$work/src"
"$work/venv/bin/pip" install -q --no-deps --no-index "$work"/dist/e2u-*.whl
(cd "$work" && "$work/venv/bin/python" -c "
import sys, core.db.migrate
core.db.migrate.upgrade('sqlite:///$work/empty.sqlite')
print('Python', sys.version.split()[0], 'migrated an empty SQLite file with', core.db.migrate.__file__)")
(cd "$work/src" && PYTHONPATH=. "$work/venv/bin/python" -m pytest --noconftest -p no:cacheprovider -o addopts= \
  -q tests/core/test_settings.py tests/test_compose_file.py)
