"""Adapter versions, the active alias (moved only by compare-and-swap) and the activation event log."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db.models import ActivationEvent, ActiveAlias, AdapterErasure, AdapterVersion, VersionStatus
from core.db.repositories import guarded_update

ALIAS = "active"


def get(session: Session, version_id: str) -> AdapterVersion | None:
    return session.get(AdapterVersion, version_id)


def add(session: Session, version: AdapterVersion, clean_of: Iterable[str]) -> None:
    session.add(version)
    session.flush()
    add_clean_of(session, version.id, clean_of)


def add_clean_of(session: Session, version_id: str, request_ids: Iterable[str]) -> None:
    have = clean_of(session, version_id)
    session.add_all([AdapterErasure(version_id=version_id, request_id=r) for r in set(request_ids) - have])
    session.flush()


def clean_of(session: Session, version_id: str) -> set[str]:
    """Erasure requests whose data this version is free of."""
    return set(
        session.scalars(select(AdapterErasure.request_id).where(AdapterErasure.version_id == version_id))
    )


def any_version(session: Session) -> bool:
    """Whether any adapter version was ever registered (rows are never deleted)."""
    return session.execute(select(AdapterVersion.id).limit(1)).first() is not None


def list_versions(session: Session, status: VersionStatus | None = None) -> list[AdapterVersion]:
    query = select(AdapterVersion).order_by(AdapterVersion.created_at, AdapterVersion.id)
    if status is not None:
        query = query.where(AdapterVersion.status == status)
    return list(session.scalars(query))


def with_files(session: Session) -> list[AdapterVersion]:
    """Versions whose artifacts have not been destroyed."""
    return list(session.scalars(select(AdapterVersion).where(AdapterVersion.destroyed_at.is_(None))))


def alias(session: Session) -> ActiveAlias | None:
    return session.get(ActiveAlias, ALIAS)


def create_alias(session: Session, version_id: str, now: datetime) -> ActiveAlias:
    row = ActiveAlias(name=ALIAS, version_id=version_id, counter=1, updated_at=now)
    session.add(row)
    session.flush()
    return row


def swap_alias(
    session: Session, expected_version_id: str, expected_counter: int, new_version_id: str, now: datetime
) -> bool:
    """Move the alias only if it still points at ``expected_version_id`` with ``expected_counter``."""
    statement = (
        update(ActiveAlias)
        .where(
            ActiveAlias.name == ALIAS,
            ActiveAlias.version_id == expected_version_id,
            ActiveAlias.counter == expected_counter,
        )
        .values(version_id=new_version_id, counter=ActiveAlias.counter + 1, updated_at=now)
    )
    return guarded_update(session, statement, ActiveAlias, ALIAS)


def set_status(session: Session, version_id: str, status: VersionStatus, **values: object) -> None:
    statement = update(AdapterVersion).where(AdapterVersion.id == version_id).values(status=status, **values)
    guarded_update(session, statement, AdapterVersion, version_id)


def add_event(session: Session, event: ActivationEvent) -> None:
    session.add(event)
    session.flush()


def events(session: Session, limit: int = 100) -> list[ActivationEvent]:
    return list(session.scalars(select(ActivationEvent).order_by(ActivationEvent.id.desc()).limit(limit)))
