"""The migrations build the models' schema on SQLite and PostgreSQL, and keep the logs append-only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.db.engine import make_engine
from core.db.migrate import upgrade
from core.db.models import AuditEntry, Base
from core.db.repositories import audit as audit_repo
from core.services.erasures import idempotency_key_hash
from tests.core.conftest import PG_DSN, PG_URL


def test_migrations_match_models(session: Session) -> None:
    # Types and server defaults are compared too.  Alembic compares a TypeDecorator (UTCDateTime) by its
    # implementation, so neither dialect reports noise today: any difference here is drift.
    options = {"compare_type": True, "compare_server_default": True}
    context = MigrationContext.configure(session.connection(), opts=options)
    assert compare_metadata(context, Base.metadata) == []


def test_audit_log_is_append_only(session: Session) -> None:
    audit_repo.record(session, datetime.now(UTC), "tester", "thing.done", "thing", "1", n=1)
    session.commit()
    entry = session.query(AuditEntry).one()
    assert entry.details == {"n": 1} and entry.at.tzinfo is not None
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement))
        session.rollback()
    assert session.query(AuditEntry).count() == 1


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_0002_gives_requests_an_owner_hashes_keys_and_requeues_failed_ones(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2U_CERTIFICATE_SALT", "the-deployed-salt")  # what the service hashes with
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
        schema = None
    else:
        schema = f"e2u_mig_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_DSN, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url, "0001")
        engine = make_engine(url)
        row = (
            "INSERT INTO erasure_requests (id, idempotency_key, user_id, user_hash, scope, status, "
            "created_at, updated_at, deadline_at, retry_count) "
            "VALUES (:id, :key, 'u1', 'h', 'user', :status, :t, :t, :t, 3)"
        )
        when = datetime(2026, 1, 1)
        with engine.begin() as connection:
            connection.execute(text(row), {"id": "by-key", "key": "k-1", "status": "failed", "t": when})
            connection.execute(text(row), {"id": "by-cli", "key": None, "status": "completed", "t": when})
            connection.execute(
                text(
                    "INSERT INTO audit_log (at, actor, action, subject_type, subject_id, details) "
                    "VALUES (:t, 'api_key:7:privacy', 'erasure.received', 'erasure_request', 'by-key', '{}')"
                ),
                {"t": when},
            )
        upgrade(url)
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, owner, idempotency_key_hash, status FROM erasure_requests ORDER BY id")
            ).all()
            columns = {c["name"] for c in inspect(connection).get_columns("erasure_requests")}
        engine.dispose()
        assert [tuple(r) for r in rows] == [
            ("by-cli", "operator", None, "completed"),
            # the filing key from the audit log; the raw key only as its salted hash; back in the queue
            ("by-key", "api_key:7", idempotency_key_hash("the-deployed-salt", "k-1"), "queued"),
        ]
        assert "idempotency_key" not in columns
    finally:
        if schema is not None:
            with psycopg.connect(PG_DSN, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
