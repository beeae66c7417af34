"""A recommendation or a score reads the titles it needs, not the catalogue: the SQL the API runs for
them never selects the whole items table (at a million items that read set every request's latency and
the process's memory)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.app.conftest import Env

_ITEMS_READ = re.compile(r"\bFROM items\b(?P<rest>.*)", re.IGNORECASE | re.DOTALL)


@contextmanager
def selects() -> Iterator[list[str]]:
    """Every SELECT any engine runs meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def _whole_catalogue_reads(statements: list[str]) -> list[str]:
    found = [(s, _ITEMS_READ.search(s)) for s in statements]
    return [s for s, match in found if match is not None and "WHERE" not in match.group("rest").upper()]


def test_recommendations_and_scores_read_only_their_items(api_env: Env) -> None:
    client, headers = api_env.client, api_env.keys.header("recommend")
    with selects() as statements:
        popular = client.post("/v1/recommendations", json={"user_id": "u1", "k": 3}, headers=headers)
        given = client.post(
            "/v1/recommendations", json={"user_id": "u1", "k": 2, "candidates": ["i3", "i4"]}, headers=headers
        )
        scores = client.post(
            "/v1/scores",
            json={"pairs": [{"user_id": "u1", "item_id": "i3"}, {"user_id": "u2", "item_id": "i4"}]},
            headers=headers,
        )
    assert popular.status_code == given.status_code == scores.status_code == 200
    assert statements and not _whole_catalogue_reads(statements)
    # the titles still come with the answer: each item's own, read for this request
    titled = popular.json()["items"] + given.json()["items"]
    assert all(i["title"] == f"Movie {i['item_id'].removeprefix('i')}" for i in titled), titled


def test_a_recommendation_scans_no_table_that_grows_with_the_catalogue(api_env: Env) -> None:
    # every SELECT of a recommendation (with and without candidates), explained by SQLite: a SCAN of the
    # items, ratings, profiles or keys (a pass over the whole table, not a SEARCH by an index) is a cost
    # that grows with the catalogue; the item ranking is read from its index's head (SEARCH ... LIMIT)
    client, headers = api_env.client, api_env.keys.header("recommend")
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        for body in ({"user_id": "u1", "k": 3}, {"user_id": "u2", "k": 2, "candidates": ["i3", "i4"]}):
            assert client.post("/v1/recommendations", json=body, headers=headers).status_code == 200
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    growing = ("items", "interactions", "user_profiles", "user_data_keys", "item_popularity")
    with api_env.sessions() as session:
        raw = session.connection().connection.driver_connection
        assert raw is not None
        scans = [
            (statement, step)
            for statement, parameters in seen
            for *_, step in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            if any(step.startswith(f"SCAN {table}") for table in growing)
        ]
    assert seen and not scans, scans
