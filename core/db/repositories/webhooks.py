"""The webhook outbox (``webhook_deliveries``): events to send and the record of their delivery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import ErasureRequest, WebhookDelivery, WebhookStatus

EVENT_PREFIX = "erasure_request."  # + the request's final status: erasure_request.completed


def finished_without_event(
    session: Session, statuses: Sequence[str], since: datetime, limit: int = 500
) -> list[tuple[str, str]]:
    """(request id, status) of requests that ended in one of ``statuses`` at or after ``since`` and have
    no outbox row for that event yet."""
    event = literal(EVENT_PREFIX) + ErasureRequest.status
    recorded = exists().where(
        WebhookDelivery.request_id == ErasureRequest.id, WebhookDelivery.event_type == event
    )
    query = (
        select(ErasureRequest.id, ErasureRequest.status)
        .where(
            ErasureRequest.status.in_(statuses),
            or_(ErasureRequest.completed_at >= since, ErasureRequest.failed_at >= since),
            ~recorded,
        )
        .order_by(ErasureRequest.updated_at)
        .limit(limit)
    )
    return [(str(r), str(s)) for r, s in session.execute(query)]


def add_once(session: Session, delivery: WebhookDelivery) -> bool:
    """Insert ``delivery`` unless its event is recorded already (by a concurrent pass): False then."""
    try:
        with session.begin_nested():
            session.add(delivery)
    except IntegrityError:
        return False
    return True


def due(session: Session, now: datetime, limit: int) -> list[WebhookDelivery]:
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == WebhookStatus.PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def claim(session: Session, delivery: WebhookDelivery, until: datetime) -> bool:
    """Take ``delivery`` for one attempt by moving its ``next_attempt_at`` to ``until`` (compare-and-set on
    the value read): a concurrent sender that read the same row gets False and skips it."""
    statement = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.status == WebhookStatus.PENDING,
            WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    taken = session.execute(statement).rowcount == 1  # type: ignore[attr-defined]
    session.refresh(delivery)
    return taken


def record_attempt(session: Session, delivery: WebhookDelivery, **values: Any) -> None:
    for name, value in values.items():
        setattr(delivery, name, value)
    session.flush()


def count_by_status(session: Session) -> dict[str, int]:
    query = select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    return {str(status): int(count) for status, count in session.execute(query)}


def list_deliveries(
    session: Session, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return list(session.scalars(query.limit(limit).offset(offset)))
