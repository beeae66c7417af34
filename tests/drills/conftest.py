"""Fault drills reuse the database, seeded-data and Redis fixtures of tests/core and tests/worker;
``own_database`` is a PostgreSQL database of the drill's own (a module overrides ``db_url`` with it)."""

from collections.abc import Iterator

import pytest

from core.db.migrate import upgrade
from tests.core.conftest import (  # noqa: F401
    adapters_dir,
    db_url,
    keyring,
    postgres_schema_url,
    seeded,
    session,
    session_factory,
    sqlite_template,
    throwaway_database,
    v1_id,
)
from tests.worker.conftest import redis_url  # noqa: F401


@pytest.fixture
def own_database() -> Iterator[tuple[str, str]]:
    """A migrated PostgreSQL database of this test's own, dropped afterwards: (name, URL).  Terminating
    its backends or closing it to connections reaches only the test's own processes."""
    with throwaway_database("e2u_drill") as (name, url):
        upgrade(url)
        yield name, url
