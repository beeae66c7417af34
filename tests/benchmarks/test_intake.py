"""The intake benchmark's loops through the API: both in-process clients file accepted requests through
the whole app (authentication included) and each loop files its own users' (not timed here)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks import intake
from core.data_keys import Keyring
from core.db.engine import make_engine, session_factory
from core.db.models import ErasureRequest


@contextmanager
def seeded_database(tmp_path: Path, users: list[str]) -> Iterator[tuple[str, str, sessionmaker[Session]]]:
    """A throwaway SQLite intake database whose ``users`` have data: (dialect, URL, sessions)."""
    with intake.database("sqlite") as (dialect, url):
        engine = make_engine(url)
        try:
            sessions = session_factory(engine, Keyring(tmp_path / "keys" / "data-kek", create_missing=True))
            intake.seed_users(sessions, users)
            yield dialect, url, sessions
        finally:
            engine.dispose()


def filed_by_clients(sessions: sessionmaker[Session]) -> tuple[int, list[str]]:
    """All erasure requests, and the users of those filed through the API (the others are the operator's)."""
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(ErasureRequest)) or 0
        users = session.scalars(select(ErasureRequest.user_id).where(ErasureRequest.owner != "operator"))
        return total, sorted(users)


def test_intake_through_both_clients(tmp_path: Path) -> None:
    users = [f"u{k:02d}" for k in range(3 * 2 * 3)]  # 3 per round, 2 rounds, 3 loops filing requests
    with seeded_database(tmp_path, users) as (dialect, url, sessions):
        with intake.api_clients(url, tmp_path, sessions, list(intake.CLIENTS)) as loops:
            result = intake.measure_on(sessions, dialect, users, 3, 2, http=loops)
        summary = result.summary()
        assert summary["n"] == 2 and len(result.testclient_requests_per_s) == 2
        assert summary["http_over_bare"]["min"] > 0 and summary["testclient_over_bare"]["min"] > 0
        # 6 bare rows, 6 through the service (the operator's), 6 per client
        assert filed_by_clients(sessions) == (24, users[6:])


def test_intake_loops_run_as_concurrent_clients(tmp_path: Path) -> None:
    users = [f"u{k:02d}" for k in range(8 * 2 * 2)]  # 8 per round, 2 rounds, 2 loops filing requests
    with seeded_database(tmp_path, users) as (dialect, url, sessions):
        with intake.api_clients(url, tmp_path, sessions, ["asgi"]) as loops:
            result = intake.measure_on(sessions, dialect, users, 8, 2, http=loops, concurrency=4)
        assert result.concurrency == 4 and len(result.http_requests_per_s) == 2
        # every request of every concurrent client was accepted, once
        assert filed_by_clients(sessions) == (3 * 16, users[16:])


def test_per_second_shares_the_tasks_among_as_many_threads_in_order() -> None:
    ran: dict[str, list[int]] = {}
    lock = threading.Lock()

    def one(k: int, _task: str) -> None:
        with lock:
            ran.setdefault(threading.current_thread().name, []).append(k)  # idents are reused

    rate = intake.per_second(one, [str(k) for k in range(9)], concurrency=3)
    assert rate > 0 and len(ran) == 3  # three clients, not one loop
    assert sorted(ran.values()) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # task k on client k mod 3, in order


def test_per_second_hands_on_a_client_error() -> None:
    def one(k: int, _task: str) -> None:
        if k == 5:
            raise RuntimeError("intake over HTTP answered 500")

    with pytest.raises(RuntimeError, match="500"):  # not swallowed in its thread
        intake.per_second(one, [str(k) for k in range(8)], concurrency=3)
