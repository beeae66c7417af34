"""Erasure requests, their item scopes and their certificates."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, Table, bindparam, exists, func, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached

from core.db.engine import is_sqlite
from core.db.models import (
    OPEN_ERASURE_STATUSES,
    Certificate,
    ErasureRequest,
    ErasureScopeItem,
    ErasureStatus,
    UnlearningJob,
)
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import jobs as job_repo


def get(session: Session, request_id: str) -> ErasureRequest | None:
    return session.get(ErasureRequest, request_id)


def by_idempotency_key(session: Session, owner: str, key_hash: str) -> ErasureRequest | None:
    query = select(ErasureRequest).where(
        ErasureRequest.owner == owner, ErasureRequest.idempotency_key_hash == key_hash
    )
    return session.scalars(query).first()


@functools.cache
def _checked_insert(with_key: bool) -> Any:
    """INSERT of a request's row that happens only if its user has data (a stored rating or profile) and,
    ``with_key``, its owner filed nothing under its idempotency key.  Built once: the request's values
    and the checks' operands are bound parameters, so each call only binds them."""
    table: Table = ErasureRequest.__table__  # type: ignore[assignment]
    condition = catalog_repo.user_known_clause(bindparam("check_user_id", type_=String()))
    if with_key:
        earlier = select(ErasureRequest.id).where(
            ErasureRequest.owner == bindparam("check_owner", type_=String()),
            ErasureRequest.idempotency_key_hash == bindparam("check_key_hash", type_=String()),
        )
        condition = condition & ~exists(earlier)
    source = select(*[bindparam(c.key, type_=c.type) for c in table.columns]).where(condition)
    # RETURNING, not rowcount: psycopg reports no row count for INSERT ... SELECT through the session
    return insert(table).from_select([c.key for c in table.columns], source).returning(table.c.id)


def add_if_known_and_new(session: Session, request: ErasureRequest, item_ids: Sequence[str]) -> bool:
    """Insert ``request`` (and its scope items) only if its user has data and its owner used its
    idempotency key for nothing else, checked and inserted in one statement (``INSERT ... SELECT ...
    WHERE``): intake's checks cost no round trip of their own, and each round trip is a share of an
    accepted request's cost.  Returns whether it was inserted; the request is then in the session as if
    added and flushed."""
    with_key = request.idempotency_key_hash is not None
    table: Table = ErasureRequest.__table__  # type: ignore[assignment]
    parameters = {c.key: getattr(request, c.key) for c in table.columns}
    parameters |= {"check_user_id": request.user_id}
    if with_key:
        parameters |= {"check_owner": request.owner, "check_key_hash": request.idempotency_key_hash}
    if session.execute(_checked_insert(with_key), parameters).first() is None:
        return False
    for column, value in parameters.items():  # columns left unset were stored as NULL: say so, so that
        if column in table.c and column not in vars(request):  # reading them costs no SELECT
            setattr(request, column, value)
    make_transient_to_detached(request)  # the row exists: the object is its persistent copy
    session.add(request)
    if item_ids:
        session.add_all([ErasureScopeItem(request_id=request.id, item_id=i) for i in sorted(set(item_ids))])
        session.flush()
    return True


def scope_items(session: Session, request_id: str) -> list[str]:
    return list(
        session.scalars(
            select(ErasureScopeItem.item_id)
            .where(ErasureScopeItem.request_id == request_id)
            .order_by(ErasureScopeItem.item_id)
        )
    )


def list_requests(
    session: Session,
    status: ErasureStatus | None = None,
    limit: int = 100,
    offset: int = 0,
    owner: str | None = None,
) -> list[ErasureRequest]:
    """Newest first; only ``owner``'s when given."""
    query = select(ErasureRequest).order_by(ErasureRequest.created_at.desc(), ErasureRequest.id)
    if status is not None:
        query = query.where(ErasureRequest.status == status)
    if owner is not None:
        query = query.where(ErasureRequest.owner == owner)
    return list(session.scalars(query.limit(limit).offset(offset)))


def open_requests_summary(session: Session) -> list[tuple[datetime, datetime]]:
    """(created_at, deadline_at) of every request still to be carried out."""
    query = select(ErasureRequest.created_at, ErasureRequest.deadline_at).where(
        ErasureRequest.status.in_(sorted(OPEN_ERASURE_STATUSES))
    )
    return [(created, deadline) for created, deadline in session.execute(query)]


def count_in_status(session: Session, status: ErasureStatus) -> int:
    query = select(func.count()).select_from(ErasureRequest).where(ErasureRequest.status == status)
    return int(session.scalar(query) or 0)


def admit_received(session: Session, now: datetime) -> int:
    """Move every ``received`` request to ``queued`` (the batch queue) as of ``now``.  Returns how many."""
    result = session.execute(
        update(ErasureRequest)
        .where(ErasureRequest.status == ErasureStatus.RECEIVED)
        .values(status=ErasureStatus.QUEUED, queued_at=now, updated_at=now)
    )
    session.flush()
    return int(result.rowcount)  # type: ignore[attr-defined]


def queued_for_claim(session: Session) -> list[ErasureRequest]:
    """Queued requests, oldest first, locked for this transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``;
    SQLite: the caller holds the write lock via ``lock_for_claim``)."""
    query = (
        select(ErasureRequest)
        .where(ErasureRequest.status == ErasureStatus.QUEUED)
        .order_by(ErasureRequest.queued_at, ErasureRequest.created_at, ErasureRequest.id)
    )
    if not is_sqlite(session):
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def for_job(session: Session, request_ids: Sequence[str]) -> list[ErasureRequest]:
    query = select(ErasureRequest).where(ErasureRequest.id.in_(list(request_ids))).order_by(ErasureRequest.id)
    return list(session.scalars(query))


@dataclass(frozen=True)
class JobLease:
    """Who writes for a job: a request transition made under it also needs the request to be in job
    ``job_id`` and the job to be leased, unexpired, by ``owner`` (``jobs.held_by``)."""

    job_id: int
    owner: str


def transition(
    session: Session,
    request_ids: Sequence[str],
    expected: Iterable[ErasureStatus],
    status: ErasureStatus,
    now: datetime,
    lease: JobLease | None = None,
    **values: object,
) -> int:
    """Compare-and-set: move those of ``request_ids`` that are in one of the ``expected`` statuses (and,
    with ``lease``, in that job while its lease is held) to ``status`` with ``values``.  Returns how many
    moved: fewer than asked means another writer got there first (the caller refuses or rolls back)."""
    ids = list(request_ids)
    guard: list[ColumnElement[bool]] = [
        ErasureRequest.id.in_(ids),
        ErasureRequest.status.in_(sorted(expected)),
    ]
    if lease is not None:
        held = select(UnlearningJob.id).where(
            UnlearningJob.id == lease.job_id, job_repo.held_by(lease.owner, now)
        )
        guard += [ErasureRequest.job_id == lease.job_id, held.exists()]
    result = session.execute(
        update(ErasureRequest)
        .where(*guard)
        .values(status=status, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    for request in session.scalars(select(ErasureRequest).where(ErasureRequest.id.in_(ids))):
        session.refresh(request)
    return int(result.rowcount)  # type: ignore[attr-defined]


def ids_by_user_hash(session: Session, user_hash: str) -> set[str]:
    """Every request (any status) whose subject has this salted hash."""
    return set(session.scalars(select(ErasureRequest.id).where(ErasureRequest.user_hash == user_hash)))


def completed_ids(session: Session) -> set[str]:
    return set(
        session.scalars(select(ErasureRequest.id).where(ErasureRequest.status == ErasureStatus.COMPLETED))
    )


def add_certificate(session: Session, certificate: Certificate) -> None:
    session.merge(certificate)
    session.flush()


def certificate(session: Session, request_id: str) -> Certificate | None:
    return session.get(Certificate, request_id)


def scopes_by_user_hash(
    session: Session, user_hashes: Sequence[str], statuses: Iterable[ErasureStatus]
) -> list[tuple[str, str, list[str]]]:
    """(user hash, scope "user"/"items", scope items) of every request in ``statuses`` whose subject is one
    of ``user_hashes``.  Works for completed requests too, whose user id is redacted."""
    found: list[tuple[str, str, str]] = []
    wanted = sorted(set(user_hashes))
    for start in range(0, len(wanted), 500):
        query = select(ErasureRequest.id, ErasureRequest.user_hash, ErasureRequest.scope).where(
            ErasureRequest.user_hash.in_(wanted[start : start + 500]),
            ErasureRequest.status.in_(sorted(statuses)),
        )
        found += [(str(i), str(h), str(s)) for i, h, s in session.execute(query)]
    items: dict[str, list[str]] = {}
    partial = [request_id for request_id, _, scope in found if scope == "items"]
    for start in range(0, len(partial), 500):
        rows = session.execute(
            select(ErasureScopeItem.request_id, ErasureScopeItem.item_id).where(
                ErasureScopeItem.request_id.in_(partial[start : start + 500])
            )
        )
        for request_id, item_id in rows:
            items.setdefault(str(request_id), []).append(str(item_id))
    return [(h, scope, sorted(items.get(request_id, []))) for request_id, h, scope in found]


def open_with_data_due(session: Session, cutoff: datetime) -> list[ErasureRequest]:
    """Open requests whose deadline is at or before ``cutoff`` and whose stored data is not deleted yet,
    earliest deadline first, locked for this transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite:
    the caller holds the write lock via ``lock_for_claim``)."""
    query = (
        select(ErasureRequest)
        .where(
            ErasureRequest.status.in_(sorted(OPEN_ERASURE_STATUSES)),
            ErasureRequest.deadline_at <= cutoff,
            ErasureRequest.rows_deleted.is_(None),
            ErasureRequest.user_id.is_not(None),
        )
        .order_by(ErasureRequest.deadline_at, ErasureRequest.id)
    )
    if not is_sqlite(session):
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))
