"""Repositories: all SQL of the service lives here, one module per domain.  They flush, never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Update
from sqlalchemy.orm import Session

from core.db.models import Base


def guarded_update(session: Session, statement: Update, model: type[Base], key: Any) -> bool:
    """Run ``statement``, an UPDATE whose WHERE clause is its guard (compare-and-set), then reload row
    ``key`` of ``model`` so that objects already in the session see the new values.

    One statement, so the guard holds on both databases without a lock.  True when a row matched."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    session.flush()
    row = session.get(model, key)
    if row is not None:
        session.refresh(row)
    return bool(result.rowcount)  # type: ignore[attr-defined]
