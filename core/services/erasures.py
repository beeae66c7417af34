"""Erasure intake: create (idempotent), read, list, cancel while pending, read the certificate.

The moment a request row exists (status ``received``), its scope is excluded from every prompt and every
training run (``core.db.repositories.catalog.usable_interactions``).

Lifecycle: ``received`` (accepted, not yet seen by the batcher) -> ``queued`` (the batcher's next pass,
every ``batch_poll_seconds``, admits it to the batch queue: it waits for a full batch or the maximum wait
from then) -> ``unlearning`` (claimed into a job) -> ``verifying`` -> ``completed``; a failed gate sends it
back to ``queued`` until its retries run out (``failed``).  ``cancelled`` is reachable from ``received`` and
``queued`` only.

Owners: every request belongs to whoever filed it (``Caller.owner``: the API key, or ``operator`` for the
CLI and in-process callers); a caller sees, reads the certificate of and cancels only its own, and one
that may not see a request gets NotFound, as for an unknown id, so that ids reveal nothing.  Admins
(``Caller.admin``) see every request, but the raw user id is shown to the owner alone (``shows_user_id``).

When unlearning fails for good (retries and the exact fallback used up) the data is deleted all the same
and the request ends ``not_unlearned``; an operator re-queues it for an exact retrain
(``requeue_erasure_request``).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import (
    CANCELLABLE_ERASURE_STATUSES,
    OPEN_ERASURE_STATUSES,
    ErasureRequest,
    ErasureStatus,
    utcnow,
)
from core.db.repositories import audit as audit_repo
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import erasures as erasure_repo
from core.db.repositories import jobs as job_repo
from core.services import batching
from core.services.errors import (
    Forbidden,
    IdempotencyKeyReused,
    InvalidInput,
    NotCancellable,
    NotFound,
    NotRequeueable,
    parse_status,
)


@dataclass(frozen=True)
class IntakeConfig:
    """``salt``: secret for the user-id hash in certificates; ``deadline_days``: statutory deadline."""

    salt: str
    deadline_days: int = 30


OPERATOR_OWNER = "operator"


@dataclass(frozen=True)
class Caller:
    """Who asks: ``owner`` names what they file (``api_key:<id>``, or ``operator``); ``admin`` may see
    every request."""

    owner: str
    admin: bool = False

    @classmethod
    def api_key(cls, key_id: int, admin: bool = False) -> Caller:
        return cls(f"api_key:{key_id}", admin)

    def may_see(self, request: ErasureRequest) -> bool:
        return self.admin or request.owner == self.owner

    def shows_user_id(self, request: ErasureRequest) -> bool:
        """The raw user id is shown to the request's owner alone (admins see the salted hash)."""
        return request.owner == self.owner


# The CLI and in-process callers (tests, the worker): they file as the operator and see everything.
OPERATOR = Caller(OPERATOR_OWNER, admin=True)


def user_hash(salt: str, user_id: str) -> str:
    """HMAC-SHA256(salt, user id), hex: identifies the subject in certificates without revealing them."""
    return hmac.new(salt.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def idempotency_key_hash(salt: str, key: str) -> str:
    """HMAC-SHA256 of a client's Idempotency-Key, hex: what is stored instead of the key (which may carry
    anything a client put in it).  Migration 0002 computes the same for keys stored before it."""
    return hmac.new(salt.encode(), f"idempotency-key\x00{key}".encode(), hashlib.sha256).hexdigest()


def _same_request(session: Session, earlier: ErasureRequest, subject: str, wanted: list[str] | None) -> bool:
    same_scope = earlier.scope == ("user" if wanted is None else "items") and (
        wanted is None or erasure_repo.scope_items(session, earlier.id) == wanted
    )
    return earlier.user_hash == subject and same_scope


def _earlier(
    session: Session, owner: str, key_hash: str, subject: str, wanted: list[str] | None
) -> ErasureRequest | None:
    """The owner's earlier request under this key (IdempotencyKeyReused if it was for other data)."""
    earlier = erasure_repo.by_idempotency_key(session, owner, key_hash)
    if earlier is not None and not _same_request(session, earlier, subject, wanted):
        # the earlier request is the caller's own (keys are per owner), so naming it reveals nothing
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different erasure request", request_id=earlier.id
        )
    return earlier


def create_erasure_request(
    session: Session,
    user_id: str,
    items: Sequence[str] | None,
    config: IntakeConfig,
    idempotency_key: str | None = None,
    actor: str = "api",
    now: datetime | None = None,
    caller: Caller = OPERATOR,
) -> tuple[ErasureRequest, bool]:
    """File an erasure of a whole user (``items`` None) or of listed items of that user, owned by
    ``caller``.

    Returns (request, created): with an ``idempotency_key`` the caller used before, the earlier request
    comes back with created=False (IdempotencyKeyReused if the earlier one was for other data); keys are
    per owner.  Raises NotFound for a user with no data, InvalidInput for items the user never rated or an
    empty list.  Flushes only, except when a concurrent call with the same key wins the insert: then this
    session's transaction is rolled back and the winner's request returned (created=False).
    """
    when = now or utcnow()
    subject = user_hash(config.salt, user_id)
    wanted = sorted(set(items)) if items is not None else None
    key_hash = None if idempotency_key is None else idempotency_key_hash(config.salt, idempotency_key)
    if not user_id:
        raise InvalidInput("user_id must not be empty")
    if wanted is not None:  # the listed items are checked first (a whole user is checked by the insert)
        if key_hash is not None:
            earlier = _earlier(session, caller.owner, key_hash, subject, wanted)
            if earlier is not None:
                return earlier, False
        if not catalog_repo.user_known(session, user_id):
            raise NotFound(f"no data stored for user {user_id!r}")
        if not wanted:
            raise InvalidInput("items must list at least one item (omit it to erase the whole user)")
        unknown = sorted(set(wanted) - catalog_repo.user_item_ids(session, user_id))
        if unknown:
            raise InvalidInput(f"user {user_id!r} has no ratings of item(s) {unknown}", items=unknown)
    request = ErasureRequest(
        id=str(uuid.uuid4()),
        owner=caller.owner,
        idempotency_key_hash=key_hash,
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
    # inserted only if the user has data and the key is new, in the insert's own statement: an accepted
    # request costs two statements (this and its audit entry) and the commit
    try:
        inserted = erasure_repo.add_if_known_and_new(session, request, wanted or [])
    except IntegrityError:
        if key_hash is None:
            raise
        # Another call with the same key inserted first (the unique (owner, key hash) refused this one,
        # after the winner committed): nothing of this transaction is worth keeping; answer the winner's.
        session.rollback()
        earlier = _earlier(session, caller.owner, key_hash, subject, wanted)
        if earlier is None:
            raise
        return earlier, False
    if not inserted:  # an earlier request under this key (checked first, as it answers), or no data
        earlier = None if key_hash is None else _earlier(session, caller.owner, key_hash, subject, wanted)
        if earlier is not None:
            return earlier, False
        raise NotFound(f"no data stored for user {user_id!r}")
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


def get_erasure_request(session: Session, request_id: str, caller: Caller = OPERATOR) -> ErasureRequest:
    """The request; NotFound if unknown or not ``caller``'s to see."""
    request = erasure_repo.get(session, request_id)
    if request is None or not caller.may_see(request):
        raise NotFound(f"no erasure request {request_id!r}")
    return request


def erasure_scope_items(session: Session, request_id: str) -> list[str]:
    """Item ids of a partial request (empty for a whole-user request)."""
    return erasure_repo.scope_items(session, request_id)


def list_erasure_requests(
    session: Session,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
    caller: Caller = OPERATOR,
    everyone: bool = False,
) -> list[ErasureRequest]:
    """Newest first, ``caller``'s own or, with ``everyone`` (admins only: Forbidden otherwise), all;
    optionally only those with ``status`` (admins watch ``not_unlearned``); InvalidInput for a status that
    is not an ``ErasureStatus``."""
    if everyone and not caller.admin:
        raise Forbidden("listing every owner's erasure requests takes the admin scope")
    owner = None if everyone else caller.owner
    return erasure_repo.list_requests(session, parse_status(ErasureStatus, status), limit, offset, owner)


def cancel_erasure_request(
    session: Session,
    request_id: str,
    actor: str = "api",
    now: datetime | None = None,
    caller: Caller = OPERATOR,
) -> ErasureRequest:
    """Cancel a request that is not yet in a job (received/queued); NotCancellable otherwise, NotFound if
    not ``caller``'s.  Cancelling an already-cancelled request returns it unchanged.  Its data becomes
    usable again; the request keeps the salted user hash, not the raw user id."""
    request = get_erasure_request(session, request_id, caller)
    if request.status == ErasureStatus.CANCELLED:
        return request
    if request.status not in CANCELLABLE_ERASURE_STATUSES:
        raise NotCancellable(
            f"erasure request {request_id} is {request.status}; only a pending request can be cancelled",
            status=request.status,
        )
    when = now or utcnow()
    # the raw user id goes, as at completion: the data stays, under the user id it has in the catalog
    cancelled = ErasureStatus.CANCELLED
    if not erasure_repo.transition(
        session, [request.id], CANCELLABLE_ERASURE_STATUSES, cancelled, when, cancelled_at=when, user_id=None
    ):
        raise NotCancellable(  # a batch claimed it since it was read
            f"erasure request {request_id} is {request.status}; only a pending request can be cancelled",
            status=request.status,
        )
    audit_repo.record(session, when, actor, "erasure.cancelled", "erasure_request", request.id)
    return request


def get_certificate(session: Session, request_id: str, caller: Caller = OPERATOR) -> dict[str, Any]:
    """The signed certificate document of a completed request; NotFound until it exists (or if the request
    is not ``caller``'s)."""
    get_erasure_request(session, request_id, caller)
    certificate = erasure_repo.certificate(session, request_id)
    if certificate is None:
        raise NotFound(f"erasure request {request_id} has no certificate yet")
    return dict(certificate.document)


def requeue_erasure_request(
    session: Session, request_id: str, actor: str = "operator", now: datetime | None = None
) -> int:
    """Operator re-queue of a ``not_unlearned`` request (NotRequeueable otherwise): its data is deleted
    already, so the request goes to an exact retrain from the base (the recipe of its last job's fallback);
    returns the new job's id (the caller commits, then enqueues it)."""
    request = get_erasure_request(session, request_id)
    last_job = job_repo.get(session, request.job_id) if request.job_id is not None else None
    if request.status != ErasureStatus.NOT_UNLEARNED or last_job is None:
        raise NotRequeueable(
            f"erasure request {request_id} is {request.status}; only a not_unlearned one can be re-queued",
            status=request.status,
        )
    when = now or utcnow()
    job_id = batching.create_fallback_job(session, [request.id], last_job, when)
    audit_repo.record(session, when, actor, "erasure.requeued", "erasure_request", request.id, job_id=job_id)
    return job_id


def deadline_at_risk(request: ErasureRequest, now: datetime, risk_fraction: float) -> bool:
    """Whether ``request`` is still open and past ``risk_fraction`` (0..1] of the time from filing to its
    deadline."""
    if request.status not in OPEN_ERASURE_STATUSES:
        return False
    return _deadline_fraction(request.created_at, request.deadline_at, now) >= risk_fraction


def _deadline_fraction(created_at: datetime, deadline_at: datetime, now: datetime) -> float:
    allowed = (deadline_at - created_at).total_seconds()
    return (now - created_at).total_seconds() / allowed if allowed > 0 else 1.0


@dataclass(frozen=True)
class ErasureBacklog:
    """The erasure backlog as of a moment: ``open`` requests (received .. verifying); the oldest one's age
    (seconds) and the fraction of its time to the deadline used (1.0: at its deadline); how many are past
    ``risk_fraction`` of it (``at_risk``) or past the deadline (``overdue``); how many ended
    ``not_unlearned`` (an operator must re-queue them)."""

    open: int
    oldest_age_seconds: float
    oldest_deadline_fraction: float
    at_risk: int
    overdue: int
    not_unlearned: int


def erasure_backlog(session: Session, risk_fraction: float, now: datetime | None = None) -> ErasureBacklog:
    """The backlog figures (``ErasureBacklog``) as of ``now``."""
    when = now or utcnow()
    rows = erasure_repo.open_requests_summary(session)
    fractions = [_deadline_fraction(created, deadline, when) for created, deadline in rows]
    oldest = min((created for created, _ in rows), default=None)
    return ErasureBacklog(
        open=len(rows),
        oldest_age_seconds=0.0 if oldest is None else max((when - oldest).total_seconds(), 0.0),
        oldest_deadline_fraction=max(fractions, default=0.0),  # the oldest's, under one deadline policy
        at_risk=sum(f >= risk_fraction for f in fractions),
        overdue=sum(f >= 1.0 for f in fractions),
        not_unlearned=erasure_repo.count_in_status(session, ErasureStatus.NOT_UNLEARNED),
    )
