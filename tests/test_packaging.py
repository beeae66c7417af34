"""The distribution carries its migrations: a wheel built from this checkout, installed (not editable)
into a fresh virtual environment, migrates an empty SQLite file and an empty PostgreSQL schema from a
working directory outside the checkout (the wheel: tests/installed.py)."""

from __future__ import annotations

import json
import tomllib
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.db.models import Base
from tests.core.conftest import PG_DSN, PG_URL
from tests.installed import ROOT, run

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


def _migrate_outside_the_checkout(environment: Path, url: str, cwd: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(run(environment / "bin" / "python", "-c", MIGRATE, url, cwd=cwd))
    code = Path(report["code"])  # the installed copy ran, not this checkout
    assert code.is_relative_to(environment) and not code.is_relative_to(ROOT), code
    return report


def _head() -> str | None:
    return ScriptDirectory(str(ROOT / "migrations")).get_current_head()


def test_installed_wheel_migrates_an_empty_sqlite_file(installed_wheel: Path, tmp_path: Path) -> None:
    report = _migrate_outside_the_checkout(
        installed_wheel, f"sqlite:///{tmp_path / 'empty.sqlite'}", tmp_path
    )
    assert report["version"] == _head()
    assert set(report["tables"]) == TABLES


@pytest.mark.postgres
def test_installed_wheel_migrates_an_empty_postgres_schema(installed_wheel: Path, tmp_path: Path) -> None:
    schema = f"e2u_wheel_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        report = _migrate_outside_the_checkout(installed_wheel, url, tmp_path)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert report["version"] == _head()
    assert set(report["tables"]) == TABLES


def test_the_lock_pins_every_dependency_within_its_bounds() -> None:
    """requirements.lock (the images' versions, scripts/lock.py) pins each run-time dependency of
    pyproject.toml at a version its bounds admit."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pinned = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements.lock (run python scripts/lock.py)"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {line}"
