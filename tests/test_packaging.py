"""The distribution carries its migrations: a wheel built from this checkout, installed (not editable)
into a fresh virtual environment, migrates an empty SQLite file and an empty PostgreSQL schema from a
working directory outside the checkout.  Nothing is downloaded: the wheel is installed without its
dependencies, which the new environment reads from the running one's site-packages (a .pth line)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
import venv
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory

from core.db.models import Base
from tests.core.conftest import PG_DSN, PG_URL

ROOT = Path(__file__).resolve().parents[1]
TABLES = {*Base.metadata.tables, "alembic_version"}

# Run by the installed interpreter: migrate, then say where the code came from and what the database holds.
MIGRATE = """
import json, sys
import sqlalchemy
import core.db.migrate
core.db.migrate.upgrade(sys.argv[1])
engine = sqlalchemy.create_engine(sys.argv[1])
with engine.connect() as connection:
    version = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar_one()
    tables = sqlalchemy.inspect(connection).get_table_names()
print(json.dumps({"code": core.db.migrate.__file__, "version": version, "tables": tables}))
"""


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a fresh virtual environment that holds the e2u wheel built from this checkout."""
    work = tmp_path_factory.mktemp("wheel")
    # build from a copy: building in place would leave build/ and e2u.egg-info/ in the checkout
    source = work / "source"
    skip = shutil.ignore_patterns(".*", "var", "build", "dist", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, source, ignore=skip)
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", work / "dist", source)
    [wheel] = (work / "dist").glob("e2u-*.whl")
    environment = work / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    _run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel)
    site_packages = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    dependencies = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site_packages) / "e2u_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return environment


def _migrate_outside_the_checkout(environment: Path, url: str, cwd: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(_run(environment / "bin" / "python", "-c", MIGRATE, url, cwd=cwd))
    code = Path(report["code"])  # the installed copy ran, not this checkout
    assert code.is_relative_to(environment) and not code.is_relative_to(ROOT), code
    return report


def _head() -> str | None:
    return ScriptDirectory(str(ROOT / "migrations")).get_current_head()


def test_installed_wheel_migrates_an_empty_sqlite_file(installed: Path, tmp_path: Path) -> None:
    report = _migrate_outside_the_checkout(installed, f"sqlite:///{tmp_path / 'empty.sqlite'}", tmp_path)
    assert report["version"] == _head()
    assert set(report["tables"]) == TABLES


@pytest.mark.postgres
def test_installed_wheel_migrates_an_empty_postgres_schema(installed: Path, tmp_path: Path) -> None:
    schema = f"e2u_wheel_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        report = _migrate_outside_the_checkout(installed, url, tmp_path)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert report["version"] == _head()
    assert set(report["tables"]) == TABLES
