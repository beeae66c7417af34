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
    context = MigrationContext.configure(session.connection())
    diff = [d for d in compare_metadata(context, Base.metadata) if not _is_type_noise(d)]
    assert diff == []


def _is_type_noise(diff: object) -> bool:
    # UTCDateTime is stored as DateTime; comparing the decorator with its implementation is noise
    return isinstance(diff, list) and all(d[0] == "modify_type" for d in diff)


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
