"""SQLAlchemy 2 typed models: the registry's tables.  Alembic (``migrations/``) owns the schema; these
classes must match it (a test compares them).

Times are stored as naive UTC and read back as aware UTC (``UTCDateTime``) so that SQLite and
PostgreSQL behave alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use aware UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------------ vocabularies
# Stored as these plain strings in String columns (no database enum type): a member equals its value, so
# rows read back as ``str`` compare with the members directly.


class ErasureStatus(StrEnum):
    """An erasure request's lifecycle (``core.services.erasures`` tells the transitions)."""

    RECEIVED = "received"  # accepted; the batcher's next pass queues it
    QUEUED = "queued"  # waiting for a batch
    UNLEARNING = "unlearning"  # claimed into a job
    VERIFYING = "verifying"  # its job checks the unlearned candidate
    COMPLETED = "completed"  # certified; rows deleted, user id redacted
    # Terminal: unlearning and the exact fallback both failed for good, so no adapter free of the data
    # exists; the rows, the profile and the prepared copies were deleted all the same and the user id
    # redacted.  An operator re-queues it (``core.services.erasures.requeue_erasure_request``).
    NOT_UNLEARNED = "not_unlearned"
    CANCELLED = "cancelled"


# Not yet in a job: may be cancelled.
CANCELLABLE_ERASURE_STATUSES = frozenset({ErasureStatus.RECEIVED, ErasureStatus.QUEUED})
# Still to be carried out: counted in the backlog metrics and watched against the deadline.
OPEN_ERASURE_STATUSES = frozenset(
    {ErasureStatus.RECEIVED, ErasureStatus.QUEUED, ErasureStatus.UNLEARNING, ErasureStatus.VERIFYING}
)
# Scope excluded from every prompt and every training run.  Completed and not-unlearned requests need no
# exclusion: their rows are deleted and histories rewritten in the same transaction.
EXCLUDING_ERASURE_STATUSES = OPEN_ERASURE_STATUSES


class JobStatus(StrEnum):
    """An unlearning job's status; its progress within ``running`` is its ``JobPhase``."""

    PENDING = "pending"  # formed, never leased
    RUNNING = "running"  # leased by a worker (or its lease expired and it waits to be taken up)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


OPEN_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.RUNNING})
FINISHED_JOB_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED})


class JobPhase(StrEnum):
    """The steps of a job, in the order it walks them (``list(JobPhase)`` keeps this order)."""

    QUEUED = "queued"
    COLLECT = "collect"
    UNLEARN = "unlearn"
    VERIFY = "verify"
    REGISTER = "register"
    PROMOTE = "promote"
    PURGE = "purge"
    CERTIFY = "certify"
    DONE = "done"


class Verdict(StrEnum):
    """A job's verification verdict on its candidate."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_NEEDED = "not_needed"  # nothing of the batch was ever trained on: the parent stays as it is


class VersionStatus(StrEnum):
    """An adapter version's status in the registry."""

    CANDIDATE = "candidate"  # registered, not yet promoted
    ACTIVE = "active"  # the one the alias points at
    SUPERSEDED = "superseded"  # was active; weights kept until an erasure destroys them
    DESTROYED = "destroyed"  # weights deleted (carried erased data)
    REJECTED = "rejected"  # failed its gates or a fenced promotion; weights deleted, never served


# Weights gone or refused: such a version can never serve.
UNSERVABLE_VERSION_STATUSES = frozenset({VersionStatus.DESTROYED, VersionStatus.REJECTED})


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


# ------------------------------------------------------------------------------------------ catalog


class Item(Base):
    __tablename__ = "items"
    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    genres: Mapped[str] = mapped_column(Text, default="")


class UserDataKey(Base):
    """A user's data key (``core.data_keys``), wrapped under the key-encryption key ``kek_id``.  Deleting
    this row is what makes every copy of the user's sealed rows unreadable (crypto-shredding)."""

    __tablename__ = "user_data_keys"
    __table_args__ = (Index("ix_user_data_keys_kek", "kek_id"),)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(16))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column()


class UserProfile(Base):
    """``sealed``: age, gender and occupation, sealed under the user's data key
    (``core.db.repositories.catalog`` seals and opens it)."""

    __tablename__ = "user_profiles"
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


class Interaction(Base):
    """One rating.  ``sealed``: the rating, its timestamp, label and the prompt history of the sample
    built from it (``item:rating|...``, oldest first, as it was at import or insertion; readers drop items
    under an erasure scope from it), sealed under the user's data key.  ``user_id``, ``item_id`` and
    ``split`` stay in clear for joins, scopes and popularity."""

    __tablename__ = "interactions"
    __table_args__ = (
        UniqueConstraint("user_id", "item_id", name="uq_interactions_user_item"),
        Index("ix_interactions_split", "split"),
        Index("ix_interactions_item", "item_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[str] = mapped_column(String(64), ForeignKey("items.item_id"))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    split: Mapped[str] = mapped_column(String(8))  # train / valid / test / new
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ItemPopularity(Base):
    """How many stored ratings an item has (usable or not): the ranking of ``popular_unseen_items``.
    Written only by the database's triggers on ``interactions`` (migration 0006), never by the code."""

    __tablename__ = "item_popularity"
    __table_args__ = (Index("ix_item_popularity_rank", "ratings", "item_id"),)
    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ratings: Mapped[int] = mapped_column(Integer)


class SuppressionReplay(Base):
    """How far this database has applied the suppression ledger (``core.suppression``): its first
    ``entries`` lines, whose sha256 is ``digest``.  The API and the worker are not ready while the ledger
    holds more than this (a restored backup): ``core.services.suppression.replay`` catches up."""

    __tablename__ = "suppression_replay"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    entries: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column()


# ------------------------------------------------------------------------------------------ erasure


class ErasureRequest(Base):
    """``owner``: who filed it and alone may read or cancel it (admins aside): ``api_key:<id>`` for an API
    key, ``operator`` for the CLI and in-process callers.  ``idempotency_key_hash``: HMAC of the client's
    Idempotency-Key (the raw key is never stored), unique per owner."""

    __tablename__ = "erasure_requests"
    __table_args__ = (
        Index("ix_erasure_requests_status_queued", "status", "queued_at"),
        Index("ix_erasure_requests_user_status", "user_id", "status"),
        Index("ix_erasure_requests_owner_created", "owner", "created_at"),
        UniqueConstraint("owner", "idempotency_key_hash", name="uq_erasure_requests_owner_idempotency"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    idempotency_key_hash: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))  # redacted (NULL) once completed
    user_hash: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256(salt, user_id), kept for certificates
    scope: Mapped[str] = mapped_column(String(8))  # "user" or "items"
    status: Mapped[str] = mapped_column(String(16))  # ErasureStatus
    created_at: Mapped[datetime] = mapped_column()
    queued_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column()
    cancelled_at: Mapped[datetime | None] = mapped_column()
    failed_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
    deadline_at: Mapped[datetime] = mapped_column()
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("unlearning_jobs.id"))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    forget_samples: Mapped[int | None] = mapped_column(Integer)  # training samples in scope (the forget set)
    rows_deleted: Mapped[int | None] = mapped_column(Integer)
    profile_deleted: Mapped[bool | None] = mapped_column()


class ErasureScopeItem(Base):
    __tablename__ = "erasure_scope_items"
    request_id: Mapped[str] = mapped_column(
        ForeignKey("erasure_requests.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class Certificate(Base):
    __tablename__ = "certificates"
    request_id: Mapped[str] = mapped_column(ForeignKey("erasure_requests.id"), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column()
    issued_at: Mapped[datetime] = mapped_column()


# ------------------------------------------------------------------------------------------ jobs


class UnlearningJob(Base):
    __tablename__ = "unlearning_jobs"
    __table_args__ = (Index("ix_unlearning_jobs_status", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16))  # JobStatus
    phase: Mapped[str] = mapped_column(String(16))  # JobPhase
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    config: Mapped[dict[str, Any]] = mapped_column()
    thresholds: Mapped[dict[str, Any]] = mapped_column()
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    verdict: Mapped[str | None] = mapped_column(String(16))  # Verdict
    failure_reason: Mapped[str | None] = mapped_column(Text)
    parent_version_id: Mapped[str | None] = mapped_column(String(64))
    expected_alias_counter: Mapped[int | None] = mapped_column(Integer)
    child_version_id: Mapped[str | None] = mapped_column(String(64))
    # the verifier's verdict class (core.ml.evidence: forgotten / no_prior_signal / inconclusive / failed),
    # "not_needed" when nothing of the batch was trained on; counted in /metrics
    verdict_class: Mapped[str | None] = mapped_column(String(32))


class JobRequest(Base):
    """Which requests a job's batch held (kept after the requests move on)."""

    __tablename__ = "unlearning_job_requests"
    job_id: Mapped[int] = mapped_column(
        ForeignKey("unlearning_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[str] = mapped_column(ForeignKey("erasure_requests.id"), primary_key=True)


# ------------------------------------------------------------------------------------------ registry


class AdapterVersion(Base):
    __tablename__ = "adapter_versions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # content id from the weights' sha256
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("adapter_versions.id"))
    base_model: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column()
    artifact_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16))  # VersionStatus
    job_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column()
    promoted_at: Mapped[datetime | None] = mapped_column()
    superseded_at: Mapped[datetime | None] = mapped_column()
    destroyed_at: Mapped[datetime | None] = mapped_column()


class AdapterErasure(Base):
    """Erasure requests whose data a version is free of (inherited from its parent, plus its job's batch)."""

    __tablename__ = "adapter_version_erasures"
    version_id: Mapped[str] = mapped_column(ForeignKey("adapter_versions.id"), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("erasure_requests.id"), primary_key=True)


class ActiveAlias(Base):
    __tablename__ = "active_alias"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("adapter_versions.id"))
    counter: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column()


class ActivationEvent(Base):
    """Append-only: which version became active when (database triggers refuse updates and deletes)."""

    __tablename__ = "activation_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column()
    version_id: Mapped[str] = mapped_column(String(64))
    previous_version_id: Mapped[str | None] = mapped_column(String(64))
    counter: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # bootstrap / promote / rollback
    actor: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)


class ServingConfirmation(Base):
    """An API process's word that it serves ``version_id``: since ``confirmed_at`` (its switch), last said
    at ``seen_at`` (renewed every few seconds while it serves that version).  A process is live while its
    latest ``seen_at`` is recent; the pipeline waits for every live process to confirm a promotion."""

    __tablename__ = "serving_confirmations"
    __table_args__ = (Index("ix_serving_confirmations_seen", "seen_at"),)
    process_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    confirmed_at: Mapped[datetime] = mapped_column()
    seen_at: Mapped[datetime] = mapped_column()


class AuditEntry(Base):
    """Append-only audit log.  Never holds raw user ids: subjects are request ids or salted hashes."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)  # the export reads by time range
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))  # first characters of the key, to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the key
    scopes: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()  # None: never


class JobPhaseTiming(Base):
    """How long one attempt of a job spent in one phase (written as the job leaves the phase): the
    histogram of phase durations in /metrics is read from here, so every worker's jobs count wherever
    they ran."""

    __tablename__ = "job_phase_timings"
    __table_args__ = (Index("ix_job_phase_timings_phase", "phase"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("unlearning_jobs.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(16))  # JobPhase
    seconds: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[datetime] = mapped_column()


class WebhookStatus(StrEnum):
    PENDING = "pending"  # to be sent (again) at ``next_attempt_at``
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up after the last attempt


class WebhookDelivery(Base):
    """One webhook message (an erasure request completed or not unlearned) and its delivery: the outbox
    row the sender works from and the record of what happened.  The message id is the Standard Webhooks
    ``webhook-id``, the same on every retry, so a receiver can drop duplicates."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("request_id", "event_type", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_<uuid hex>
    event_type: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))  # WebhookStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column()
    next_attempt_at: Mapped[datetime] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))  # an error class or "HTTP 503", no text
