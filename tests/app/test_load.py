"""The load drill's burst in the default run: erasure requests for different users sent at once to a real
uvicorn server on loopback (``benchmarks/load.py``; the 500-burst and the mixed load run with
``python -m benchmarks.load``).

Before admission control, 60 at once stalled the API for 30 s and ended with 31-40 answers of 500: the
requests waiting for a database connection held every worker thread, and those holding a connection
could not get a thread back to commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.load import Target, burst, missing_requests, prepare_target, serve, throwaway_schema
from tests.core.conftest import PG_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with throwaway_schema(PG_URL) as url:
        yield url


def _target(tmp_path: Path, url: str | None, users: int, **settings: object) -> Target:
    return prepare_target(tmp_path, url, users=users, **settings)


def test_a_burst_of_60_erasure_requests_is_served_at_once(tmp_path: Path, database_url: str | None) -> None:
    target = _target(tmp_path, database_url, 60)
    with serve(target.app()) as base_url:
        started = time.monotonic()
        outcome = asyncio.run(burst(base_url, target.erase_key, target.users))
        seconds = time.monotonic() - started
    print(outcome.summary())
    assert outcome.statuses == {"201": 60}, outcome.summary()
    assert seconds < 10, outcome.summary()  # was ~30 s
    assert missing_requests(target.settings.database_url_resolved, outcome.accepted_ids) == []


def test_beyond_the_wait_a_burst_is_refused_with_503_and_retry_after_and_nothing_accepted_is_lost(
    tmp_path: Path,
) -> None:
    # one request inside at a time and no waiting: most of the burst is refused, each with Retry-After
    target = _target(tmp_path, None, 40, admission_limit=1, admission_wait_seconds=0.0)
    with serve(target.app()) as base_url:
        outcome = asyncio.run(burst(base_url, target.erase_key, target.users))
    print(outcome.summary())
    assert set(outcome.statuses) <= {"201", "503"}, outcome.summary()
    assert outcome.statuses["503"] > 0 and outcome.refused_without_retry_after == 0
    assert outcome.errors == 0
    assert len(outcome.accepted_ids) == outcome.statuses["201"]
    assert missing_requests(target.settings.database_url_resolved, outcome.accepted_ids) == []
