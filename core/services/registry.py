"""Adapter registry: versions with lineage, the active alias (compare-and-swap), promotion and rollback
within the erasure rule, and destruction of weights that carry erased data."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import (
    UNSERVABLE_VERSION_STATUSES,
    ActivationEvent,
    AdapterVersion,
    Verdict,
    VersionStatus,
    utcnow,
)
from core.db.repositories import adapters as adapter_repo
from core.db.repositories import audit as audit_repo
from core.db.repositories import erasures as erasure_repo
from core.ml.model import ModelError, verify_adapter
from core.services.errors import (
    Conflict,
    NotFound,
    PredatesErasure,
    StalePromotion,
    VersionUnavailable,
    parse_status,
)


@dataclass(frozen=True)
class ActiveAdapter:
    """What serves now: ``counter`` grows by one with every move of the alias."""

    version_id: str
    counter: int
    artifact_path: str
    sha256: str
    base_model: str
    updated_at: datetime


def active_adapter(session: Session) -> ActiveAdapter | None:
    """The active version (one primary-key read; cheap enough to poll), or None before bootstrap."""
    alias = adapter_repo.alias(session)
    if alias is None:
        return None
    version = adapter_repo.get(session, alias.version_id)
    assert version is not None  # foreign key
    return ActiveAdapter(
        version.id, alias.counter, version.artifact_path, version.sha256, version.base_model, alias.updated_at
    )


def get_version(session: Session, version_id: str) -> AdapterVersion:
    version = adapter_repo.get(session, version_id)
    if version is None:
        raise NotFound(f"no adapter version {version_id!r}")
    return version


def list_versions(session: Session, status: str | None = None) -> list[AdapterVersion]:
    """Every version (only those with ``status``, a ``VersionStatus``, if given), oldest first
    (``parent_id`` gives the lineage)."""
    return adapter_repo.list_versions(session, parse_status(VersionStatus, status))


def lineage(session: Session, version_id: str) -> list[str]:
    """``version_id`` and its ancestors, newest first."""
    chain: list[str] = []
    current: AdapterVersion | None = get_version(session, version_id)
    while current is not None:
        chain.append(current.id)
        current = adapter_repo.get(session, current.parent_id) if current.parent_id else None
    return chain


def activation_events(session: Session, limit: int = 100) -> list[ActivationEvent]:
    """The append-only log of which version became active when, newest first."""
    return adapter_repo.events(session, limit)


def register_version(
    session: Session,
    version_id: str,
    parent_id: str | None,
    base_model: str,
    artifact_path: Path,
    sha256: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    clean_of: set[str],
    job_id: int | None = None,
    now: datetime | None = None,
) -> AdapterVersion:
    """Record a candidate version (idempotent: an existing ``version_id`` is returned as is)."""
    existing = adapter_repo.get(session, version_id)
    if existing is not None:
        adapter_repo.add_clean_of(session, version_id, clean_of)
        return existing
    when = now or utcnow()
    version = AdapterVersion(
        id=version_id,
        parent_id=parent_id,
        base_model=base_model,
        config=config,
        artifact_path=str(artifact_path),
        sha256=sha256,
        metrics=metrics,
        status=VersionStatus.CANDIDATE,
        job_id=job_id,
        created_at=when,
    )
    adapter_repo.add(session, version, clean_of)
    audit_repo.record(
        session,
        when,
        "system",
        "adapter.registered",
        "adapter_version",
        version_id,
        parent=parent_id,
        job_id=job_id,
    )
    return version


@dataclass(frozen=True)
class NewCandidate:
    """A child adapter a job made, with its weights saved in a temporary ``folder`` of its own."""

    folder: Path
    sha256: str
    parent_id: str
    base_model: str
    config: dict[str, Any]  # how it was made (method, method_config, job_id)
    metrics: dict[str, Any]
    job_id: int


def register_candidate(
    session: Session,
    candidate: NewCandidate,
    batch: Iterable[str],
    adapters_dir: Path,
    rejection: str | None = None,
    now: datetime | None = None,
) -> str:
    """Register a job's child adapter and return its version id (the first 16 hex digits of its sha256).

    Accepted (``rejection`` None): its weights move to ``adapters_dir/<version id>`` and it becomes a
    ``candidate`` free of the parent's erasures and of the ``batch`` of requests.  Rejected for the reason
    ``rejection``: it is listed as ``rejected`` (figures and reason kept, for admins) and its weights are
    destroyed, as they were saved only to name it by content; if the same weights are already registered
    otherwise (the unchanged parent), nothing is recorded.  Idempotent; ``candidate.folder`` is gone after."""
    version_id = candidate.sha256[:16]
    clean = adapter_repo.clean_of(session, candidate.parent_id)
    metrics = candidate.metrics
    if rejection is None:
        folder, clean = adapters_dir / version_id, clean | set(batch)
        if folder.exists():
            shutil.rmtree(candidate.folder)
        else:
            candidate.folder.rename(folder)
    else:
        # not shown to be free of this batch; its weights stay in the temporary folder until rejected
        folder, metrics = candidate.folder, {**metrics, "verdict": Verdict.FAILED}
        existing = adapter_repo.get(session, version_id)
        if existing is not None and existing.status != VersionStatus.REJECTED:
            delete_artifact(str(folder))
            return version_id
    try:
        register_version(
            session,
            version_id,
            candidate.parent_id,
            candidate.base_model,
            folder,
            candidate.sha256,
            candidate.config,
            metrics,
            clean,
            candidate.job_id,
            now,
        )
        if rejection is not None:
            reject_version(session, version_id, f"job:{candidate.job_id}", rejection, now)
    finally:
        if rejection is not None:  # its weights go even when registering fails
            delete_artifact(str(folder))
    return version_id


def activate_first(
    session: Session, version_id: str, actor: str = "bootstrap", now: datetime | None = None
) -> None:
    """Point the alias at ``version_id`` when no version is active yet (bootstrap)."""
    when = now or utcnow()
    alias = adapter_repo.create_alias(session, version_id, when)
    event = ActivationEvent(
        at=when, version_id=version_id, counter=alias.counter, kind="bootstrap", actor=actor
    )
    _activate(session, event)


def _activate(session: Session, event: ActivationEvent) -> None:
    """Mark the event's version active (the alias already points at it) and append the event."""
    adapter_repo.set_status(session, event.version_id, VersionStatus.ACTIVE, promoted_at=event.at)
    adapter_repo.add_event(session, event)


def missing_erasures(session: Session, version_id: str) -> set[str]:
    """Requests whose data ``version_id`` may still carry although they are completed or the active
    version is free of them: a version with any may never become active."""
    must = erasure_repo.completed_ids(session)
    current = adapter_repo.alias(session)
    if current is not None:
        must |= adapter_repo.clean_of(session, current.version_id)
    return must - adapter_repo.clean_of(session, version_id)


def promote_version(
    session: Session,
    version_id: str,
    expected_version_id: str,
    expected_counter: int,
    actor: str,
    kind: str = "promote",
    job_id: int | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> ActiveAdapter:
    """Make ``version_id`` active if the alias still reads (``expected_version_id``, ``expected_counter``).

    ``kind``: "promote" or "rollback" (recorded).  Raises PredatesErasure when the version may carry data of
    a completed erasure, VersionUnavailable when its weights are gone or corrupted (their sha256 differs) or
    it was rejected, StalePromotion when the alias moved.  The old version becomes ``superseded`` (weights
    kept; see ``destroy_versions``).  Flushes only; the caller commits, then publishes
    ``core.events.promotion_event``.
    """
    when = now or utcnow()
    version = get_version(session, version_id)
    missing = missing_erasures(session, version_id)
    if missing:
        raise PredatesErasure(
            f"adapter version {version_id} predates {len(missing)} completed erasure(s); "
            "it may still carry their data",
            requests=sorted(missing),
        )
    if version.destroyed_at is not None or version.status in UNSERVABLE_VERSION_STATUSES:
        raise VersionUnavailable(
            f"adapter version {version_id} is {version.status}; its weights cannot serve"
        )
    check_weights(version)
    if version_id == expected_version_id:
        raise StalePromotion(f"adapter version {version_id} is already active")
    if not adapter_repo.swap_alias(session, expected_version_id, expected_counter, version_id, when):
        current = adapter_repo.alias(session)
        raise StalePromotion(
            f"the active version moved (expected {expected_version_id}#{expected_counter}, "
            f"found {current.version_id if current else None}#{current.counter if current else None})"
        )
    alias = adapter_repo.alias(session)
    assert alias is not None
    adapter_repo.set_status(session, expected_version_id, VersionStatus.SUPERSEDED, superseded_at=when)
    event = ActivationEvent(
        at=when,
        version_id=version_id,
        previous_version_id=expected_version_id,
        counter=alias.counter,
        kind=kind,
        actor=actor,
        job_id=job_id,
        reason=reason,
    )
    _activate(session, event)
    audit_repo.record(
        session,
        when,
        actor,
        f"adapter.{kind}",
        "adapter_version",
        version_id,
        previous=expected_version_id,
        counter=alias.counter,
        job_id=job_id,
        reason=reason,
    )
    active = active_adapter(session)
    assert active is not None
    return active


def check_weights(version: AdapterVersion) -> None:
    """VersionUnavailable unless the version's weights on disk hash to the sha256 recorded for them: a
    missing or corrupted file never becomes active (and the version it would replace is never purged)."""
    try:
        verify_adapter(Path(version.artifact_path), version.sha256)
    except ModelError as error:
        raise VersionUnavailable(f"adapter version {version.id}: {error}") from error


def versions_carrying(session: Session, request_ids: set[str]) -> list[AdapterVersion]:
    """Versions with weights on disk that are not free of every request in ``request_ids``."""
    return [
        v for v in adapter_repo.with_files(session) if not request_ids <= adapter_repo.clean_of(session, v.id)
    ]


def mark_destroyed(
    session: Session, version_id: str, actor: str, reason: str, now: datetime | None = None
) -> datetime:
    """Record that a version's weights are gone (status destroyed unless it was rejected)."""
    when = now or utcnow()
    version = get_version(session, version_id)
    rejected = version.status == VersionStatus.REJECTED
    status = VersionStatus.REJECTED if rejected else VersionStatus.DESTROYED
    adapter_repo.set_status(session, version_id, status, destroyed_at=when)
    audit_repo.record(session, when, actor, "adapter.destroyed", "adapter_version", version_id, reason=reason)
    return when


def reject_version(
    session: Session, version_id: str, actor: str, reason: str, now: datetime | None = None
) -> None:
    """Mark a candidate ``rejected`` for ``reason`` (kept in its metrics as ``rejection_reason``) and
    destroy its weights.  It stays listed for admins and can never be promoted.  Refuses (Conflict) a
    version that is or was active: only candidates are rejected."""
    when = now or utcnow()
    version = get_version(session, version_id)
    if version.status not in (VersionStatus.CANDIDATE, VersionStatus.REJECTED):
        raise Conflict(
            f"adapter version {version_id} is {version.status}; only a candidate can be rejected",
            status=version.status,
        )
    delete_artifact(version.artifact_path)
    metrics = {**version.metrics, "rejection_reason": reason}
    adapter_repo.set_status(
        session,
        version_id,
        VersionStatus.REJECTED,
        metrics=metrics,
        destroyed_at=version.destroyed_at or when,
    )
    audit_repo.record(session, when, actor, "adapter.rejected", "adapter_version", version_id, reason=reason)


def delete_artifact(artifact_path: str) -> None:
    """Delete a version's folder (idempotent)."""
    shutil.rmtree(artifact_path, ignore_errors=True)
    if Path(artifact_path).exists():
        raise OSError(f"could not delete {artifact_path}")
