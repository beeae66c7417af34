"""The migrations build the models' schema on SQLite and PostgreSQL, and keep the logs append-only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.db.models import AuditEntry, Base
from core.db.repositories import audit as audit_repo


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
