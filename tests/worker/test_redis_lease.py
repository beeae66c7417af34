"""Worker test runs side by side (several suites at once) each get a Redis database of their own: before,
every run shared database 11, and one run's worker could take another run's job."""

from __future__ import annotations

import pytest
import redis

from tests.worker.conftest import leased_redis_db


@pytest.mark.postgres  # needs the machine's Redis
def test_runs_at_the_same_time_get_different_redis_databases() -> None:
    with leased_redis_db() as first, leased_redis_db() as second:
        assert first != second
        # emptied when leased: what a killed run left there (its queued jobs) cannot reach this one
        assert redis.Redis.from_url(first).dbsize() == redis.Redis.from_url(second).dbsize() == 0
