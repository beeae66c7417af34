"""The database and seeded-data fixtures of tests/core serve the worker tests too; ``redis_url`` gives each
test a Redis database of its own, so that test runs side by side never take each other's jobs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.conftest import MODELS_DIR
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

REDIS_HOST = "redis://127.0.0.1:6379"
# database 0 holds the leases; 12 is tests/app/test_end_to_end.py's own
LEASABLE_DATABASES = [n for n in range(1, 16) if n != 12]
LEASE_SECONDS = 3600  # a run killed before its teardown frees its database after this


@contextmanager
def leased_redis_db() -> Iterator[str]:
    """The URL of a Redis database leased to the caller alone (SET NX on a key in database 0, freed on
    exit), emptied first: messages left by a killed run cannot reach this one, nor this one's another."""
    leases = redis.Redis.from_url(f"{REDIS_HOST}/0")
    token = f"{os.getpid()}:{id(leases)}"
    for number in LEASABLE_DATABASES:
        key = f"e2u-tests:redis-db:{number}"
        if leases.set(key, token, nx=True, ex=LEASE_SECONDS):
            break
    else:
        raise RuntimeError(f"every test Redis database {LEASABLE_DATABASES} is leased; try again later")
    url = f"{REDIS_HOST}/{number}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        if leases.get(key) == token.encode():
            leases.delete(key)
        leases.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of this test's own (``leased_redis_db``)."""
    with leased_redis_db() as url:
        yield url


def worker_environment(home: Path, database_url: str, redis_url: str) -> dict[str, str]:
    """A worker process on the tiny model and the stand-in method ``test-nudge`` (imported by the
    process), with ``home`` (its adapter store, keys) and the test's database and Redis database."""
    models = home / "models"
    if not models.exists():
        models.symlink_to(MODELS_DIR)
    return {
        **os.environ,
        "E2U_HOME": str(home),
        "E2U_DATABASE_URL": database_url,
        "E2U_BROKER_URL": redis_url,
        "E2U_RESULT_BACKEND": redis_url,
        "E2U_REDIS_URL": redis_url,
        "E2U_BASE_MODEL": "tiny",
        "E2U_ENVIRONMENT": "development",  # the worker creates its signing key under E2U_HOME/keys
        "E2U_UNLEARNING_METHOD": "test-nudge",
        "E2U_UTILITY_MARGIN": "1.0",
        "E2U_MIA_MARGIN": "0.5",
        "E2U_GOLD_MARGIN": "1.0",
    }
