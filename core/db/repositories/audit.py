"""The append-only audit log and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from core.db.models import ApiKey, AuditEntry


def record(
    session: Session,
    now: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    **details: Any,
) -> None:
    """Append an audit entry.  Never pass raw user ids: use request ids or salted hashes."""
    # a plain INSERT, not a unit-of-work flush of a new object: nothing reads the entry back, and every
    # erasure request writes one (the ORM's bookkeeping was a fifth of intake's time)
    entry = {
        "at": now,
        "actor": actor,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "details": details,
    }
    session.execute(insert(AuditEntry), entry)


def entries(session: Session, subject_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if subject_id is not None:
        query = query.where(AuditEntry.subject_id == subject_id)
    return list(session.scalars(query.limit(limit)))


def entries_page(
    session: Session,
    since: datetime | None,
    until: datetime | None,
    kinds: Sequence[str],
    after_id: int,
    limit: int,
) -> list[AuditEntry]:
    """Up to ``limit`` entries with an id above ``after_id``, in [since, until), whose action is a kind or
    starts with ``kind.``; in id order (the order they were written)."""
    query = select(AuditEntry).where(AuditEntry.id > after_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if kinds:
        query = query.where(
            or_(
                *[
                    or_(AuditEntry.action == k, AuditEntry.action.startswith(f"{k}.", autoescape=True))
                    for k in kinds
                ]
            )
        )
    return list(session.scalars(query.order_by(AuditEntry.id).limit(limit)))


def add_key(session: Session, key: ApiKey) -> ApiKey:
    session.add(key)
    session.flush()
    return key


def key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))
