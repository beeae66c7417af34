"""What accepting an erasure request costs the database, in statements: its rate is counted in round
trips (``python -m benchmarks intake``), so the checks ride on the insert."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from core.db.models import AuditEntry, ErasureRequest
from core.ml.data import PreparedData
from core.services.erasures import IntakeConfig, create_erasure_request
from core.services.errors import NotFound

INTAKE = IntakeConfig(salt="test-salt")


@contextmanager
def statements(session: Session) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(connection, "before_cursor_execute", record)


def test_an_accepted_request_is_two_inserts(session: Session, seeded: PreparedData) -> None:
    with statements(session) as seen:
        request, created = create_erasure_request(session, "u1", None, INTAKE, idempotency_key="k-1")
    assert created and seen == ["INSERT", "INSERT"]  # the checked insert of the request; its audit entry
    with statements(session) as seen:  # the answer reads every field: all known, none read back
        fields = {c.key: getattr(request, c.key) for c in ErasureRequest.__table__.columns}
    assert seen == [] and fields["completed_at"] is None and fields["retry_count"] == 0
    session.commit()
    assert session.get(ErasureRequest, request.id) is request  # the session holds it as if it added it
    assert session.query(AuditEntry).filter_by(subject_id=request.id).count() == 1


def test_the_checks_on_the_insert_still_refuse_and_answer(session: Session, seeded: PreparedData) -> None:
    first, _ = create_erasure_request(session, "u2", None, INTAKE, idempotency_key="k-2")
    session.commit()
    again, created = create_erasure_request(session, "u2", None, INTAKE, idempotency_key="k-2")
    assert again.id == first.id and not created
    with pytest.raises(NotFound):
        create_erasure_request(session, "nobody", None, INTAKE, idempotency_key="k-3")
    session.rollback()
    assert session.query(ErasureRequest).count() == 1
