"""Erasure intake: create (idempotent), read, list, cancel while pending, read the certificate.

The moment a request row exists (status ``received``), its scope is excluded from every prompt and every
training run (``core.db.repositories.catalog.usable_interactions``).

Lifecycle: ``received`` (accepted, not yet seen by the batcher) -> ``queued`` (the batcher's next pass,
every ``batch_poll_seconds``, admits it to the batch queue: it waits for a full batch or the maximum wait
from then) -> ``unlearning`` (claimed into a job) -> ``verifying`` -> ``completed``; a failed gate sends it
back to ``queued`` until its retries run out (``failed``).  ``cancelled`` is reachable from ``received`` and
``queued`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import CANCELLABLE_ERASURE_STATUSES, ErasureRequest, ErasureStatus, utcnow
from core.db.repositories import audit as audit_repo
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import erasures as erasure_repo
from core.services.errors import IdempotencyKeyReused, InvalidInput, NotCancellable, NotFound, parse_status


@dataclass(frozen=True)
class IntakeConfig:
    """``salt``: secret for the user-id hash in certificates; ``deadline_days``: statutory deadline."""

    salt: str
    deadline_days: int = 30


def user_hash(salt: str, user_id: str) -> str:
    """HMAC-SHA256(salt, user id), hex: identifies the subject in certificates without revealing them."""
    return hmac.new(salt.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def create_erasure_request(
    session: Session,
    user_id: str,
    items: Sequence[str] | None,
    config: IntakeConfig,
    idempotency_key: str | None = None,
    actor: str = "api",
    now: datetime | None = None,
) -> tuple[ErasureRequest, bool]:
    """File an erasure of a whole user (``items`` None) or of listed items of that user.

    Returns (request, created): with a known ``idempotency_key`` the earlier request comes back with
    created=False (IdempotencyKeyReused if the earlier one was for other data).  Raises NotFound for a
    user with no data, InvalidInput for items the user never rated or an empty list.  Flushes only.
    """
    when = now or utcnow()
    subject = user_hash(config.salt, user_id)
    wanted = sorted(set(items)) if items is not None else None
    if idempotency_key is not None:
        earlier = erasure_repo.by_idempotency_key(session, idempotency_key)
        if earlier is not None:
            same_scope = earlier.scope == ("user" if wanted is None else "items") and (
                wanted is None or erasure_repo.scope_items(session, earlier.id) == wanted
            )
            if earlier.user_hash != subject or not same_scope:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used for a different erasure request", request_id=earlier.id
                )
            return earlier, False
    if not user_id:
        raise InvalidInput("user_id must not be empty")
    if not catalog_repo.user_known(session, user_id):
        raise NotFound(f"no data stored for user {user_id!r}")
    if wanted is not None:
        if not wanted:
            raise InvalidInput("items must list at least one item (omit it to erase the whole user)")
        unknown = sorted(set(wanted) - catalog_repo.user_item_ids(session, user_id))
        if unknown:
            raise InvalidInput(f"user {user_id!r} has no ratings of item(s) {unknown}", items=unknown)
    request = ErasureRequest(
        id=str(uuid.uuid4()),
        idempotency_key=idempotency_key,
        user_id=user_id,
        user_hash=subject,
        scope="user" if wanted is None else "items",
        status=ErasureStatus.RECEIVED,
        created_at=when,
        queued_at=None,
        updated_at=when,
        deadline_at=when + timedelta(days=config.deadline_days),
        retry_count=0,
    )
    erasure_repo.add(session, request, wanted or [])
    audit_repo.record(
        session,
        when,
        actor,
        "erasure.received",
        "erasure_request",
        request.id,
        scope=request.scope,
        items=len(wanted or []),
        user_hash=subject,
    )
    return request, True


def get_erasure_request(session: Session, request_id: str) -> ErasureRequest:
    """The request; NotFound if unknown."""
    request = erasure_repo.get(session, request_id)
    if request is None:
        raise NotFound(f"no erasure request {request_id!r}")
    return request


def erasure_scope_items(session: Session, request_id: str) -> list[str]:
    """Item ids of a partial request (empty for a whole-user request)."""
    return erasure_repo.scope_items(session, request_id)


def list_erasure_requests(
    session: Session, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[ErasureRequest]:
    """Newest first, optionally only those with ``status`` (admins watch ``failed``); InvalidInput for a
    status that is not an ``ErasureStatus``."""
    return erasure_repo.list_requests(session, parse_status(ErasureStatus, status), limit, offset)


def cancel_erasure_request(
    session: Session, request_id: str, actor: str = "api", now: datetime | None = None
) -> ErasureRequest:
    """Cancel a request that is not yet in a job (received/queued); NotCancellable otherwise.
    Cancelling an already-cancelled request returns it unchanged.  Its data becomes usable again."""
    request = get_erasure_request(session, request_id)
    if request.status == ErasureStatus.CANCELLED:
        return request
    if request.status not in CANCELLABLE_ERASURE_STATUSES:
        raise NotCancellable(
            f"erasure request {request_id} is {request.status}; only a pending request can be cancelled",
            status=request.status,
        )
    when = now or utcnow()
    erasure_repo.set_status(session, [request.id], ErasureStatus.CANCELLED, when, cancelled_at=when)
    audit_repo.record(session, when, actor, "erasure.cancelled", "erasure_request", request.id)
    return request


def get_certificate(session: Session, request_id: str) -> dict[str, Any]:
    """The signed certificate document of a completed request; NotFound until it exists."""
    get_erasure_request(session, request_id)
    certificate = erasure_repo.certificate(session, request_id)
    if certificate is None:
        raise NotFound(f"erasure request {request_id} has no certificate yet")
    return dict(certificate.document)
