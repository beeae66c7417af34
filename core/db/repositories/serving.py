"""Serving processes' confirmations of the adapter version they serve (``ServingConfirmation``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.db.models import ServingConfirmation

# rows not renewed for this long belong to processes long gone (or versions they left): dropped
RETENTION = timedelta(days=7)


def confirm(session: Session, process_id: str, version_id: str, now: datetime) -> bool:
    """Record that ``process_id`` serves ``version_id`` now; True when this is its first word about that
    version (the switch: ``confirmed_at`` is ``now``).  Only the process itself writes its rows."""
    renewed = session.execute(
        update(ServingConfirmation)
        .where(ServingConfirmation.process_id == process_id, ServingConfirmation.version_id == version_id)
        .values(seen_at=now)
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount:  # type: ignore[attr-defined]
        return False
    session.add(
        ServingConfirmation(process_id=process_id, version_id=version_id, confirmed_at=now, seen_at=now)
    )
    session.execute(delete(ServingConfirmation).where(ServingConfirmation.seen_at < now - RETENTION))
    session.flush()
    return True


def live_processes(session: Session, since: datetime) -> dict[str, datetime]:
    """Processes that said what they serve at or after ``since``: process id -> when they last did."""
    last = func.max(ServingConfirmation.seen_at)
    query = (
        select(ServingConfirmation.process_id, last)
        .group_by(ServingConfirmation.process_id)
        .having(last >= since)
    )
    return {process: _aware(seen) for process, seen in session.execute(query)}


def confirmations(session: Session, version_id: str) -> dict[str, datetime]:
    """process id -> when it switched to ``version_id``, for every process that ever served it."""
    query = select(ServingConfirmation.process_id, ServingConfirmation.confirmed_at).where(
        ServingConfirmation.version_id == version_id
    )
    return {process: confirmed for process, confirmed in session.execute(query)}


def _aware(moment: datetime) -> datetime:
    """Aware UTC whatever the driver hands back for an aggregate."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
