"""Fault drills reuse the database, seeded-data and Redis fixtures of tests/core and tests/worker."""

from tests.core.conftest import (  # noqa: F401
    adapters_dir,
    db_url,
    keyring,
    postgres_schema_url,
    seeded,
    session,
    session_factory,
    sqlite_template,
    v1_id,
)
from tests.worker.conftest import redis_url  # noqa: F401
