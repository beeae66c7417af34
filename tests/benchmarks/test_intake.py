"""The intake benchmark's loops through the API: both in-process clients file accepted requests through
the whole app (authentication included) and each loop files its own users' (not timed here)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from benchmarks import intake
from core.data_keys import Keyring
from core.db.engine import make_engine, session_factory
from core.db.models import ErasureRequest


def test_intake_through_both_clients(tmp_path: Path) -> None:
    with intake.database("sqlite") as (dialect, url):
        engine = make_engine(url)
        try:
            sessions = session_factory(engine, Keyring(tmp_path / "keys" / "data-kek", create_missing=True))
            users = [f"u{k}" for k in range(3 * 2 * 3)]  # 3 per round, 2 rounds, 3 loops filing requests
            intake.seed_users(sessions, users)
            with intake.api_clients(url, tmp_path, sessions, list(intake.CLIENTS)) as loops:
                result = intake.measure_on(sessions, dialect, users, 3, 2, http=loops)
            summary = result.summary()
            assert summary["n"] == 2 and len(result.testclient_requests_per_s) == 2
            assert summary["http_over_bare"]["min"] > 0 and summary["testclient_over_bare"]["min"] > 0
            with sessions() as session:  # 6 bare rows, 6 through the service, 6 per client
                assert session.scalar(select(func.count()).select_from(ErasureRequest)) == 24
                filed = set(
                    session.scalars(select(ErasureRequest.user_id).where(ErasureRequest.owner != "operator"))
                )
            assert filed == set(users[6:])  # the service's 6 are the operator's
        finally:
            engine.dispose()
