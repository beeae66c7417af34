"""The suppression ledger in use: jobs append to it as they delete an erasure's data, and a database
restored from a backup replays it before serving (the API and the worker are not ready until then).

Replaying an entry, in the restored database: the subject's rows in scope (found by the salted user hash
of every stored user id), their profile and data key (whole user) are deleted, and when anything of the
subject was still there, every adapter version created before the entry's deletion time is destroyed (it
may have trained on the data) unless the registry records it free of a request of that subject.  Entries
the database had already applied (its recorded position) are skipped.  Replaying runs when a process
starts (the API before it loads an adapter, the worker before each task): restart the processes after
restoring a database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from core.db.repositories import adapters as adapter_repo
from core.db.repositories import audit as audit_repo
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import erasures as erasure_repo
from core.db.repositories import suppression as suppression_repo
from core.services import registry
from core.services.erasures import user_hash
from core.suppression import LedgerEntry, SuppressionLedger

log = logging.getLogger(__name__)

ACTOR = "suppression-ledger"


@dataclass(frozen=True)
class LedgerStatus:
    """``caught_up``: the database has applied every entry of the ledger (and the same ones)."""

    ledger_entries: int
    applied_entries: int
    caught_up: bool


def ledger_status(session: Session, ledger: SuppressionLedger) -> LedgerStatus:
    applied = suppression_repo.applied(session)
    prefix, end = ledger.positions(applied.entries)
    same_prefix = applied.entries <= end.entries and prefix == applied
    return LedgerStatus(end.entries, applied.entries, same_prefix and applied.entries == end.entries)


def record_deletions(
    session: Session, ledger: SuppressionLedger, entries: list[LedgerEntry], now: datetime
) -> None:
    """Append ``entries`` to the ledger (durably, before the caller commits the deletions) and record
    the database's new position in the same transaction as the deletions."""
    if entries:
        ledger.append(entries)
        suppression_repo.record(session, ledger.position(), now)


@dataclass
class ReplayReport:
    entries_replayed: int = 0
    subjects_found: int = 0
    rows_deleted: int = 0
    profiles_deleted: int = 0
    versions_destroyed: list[str] = field(default_factory=list)


def replay(session: Session, ledger: SuppressionLedger, now: datetime) -> ReplayReport:
    """Apply the ledger's entries that this database has not applied (all of them when its recorded
    position is not a prefix of the ledger), then record the ledger's end as applied.  Flushes only."""
    entries, end = ledger.read()
    applied = suppression_repo.applied(session)
    start = applied.entries if ledger.position(applied.entries) == applied else 0
    report = ReplayReport()
    pending = entries[start:]
    if pending:
        hashes = {user_hash(ledger.salt, u): u for u in catalog_repo.stored_user_ids(session)}
        for entry in pending:
            _apply(session, ledger, entry, hashes.get(entry.user_hash), report, now)
        report.entries_replayed = len(pending)
        audit_repo.record(
            session,
            now,
            ACTOR,
            "suppression.replayed",
            "suppression_ledger",
            end.digest[:16],
            entries=len(pending),
            subjects_found=report.subjects_found,
            rows_deleted=report.rows_deleted,
            versions_destroyed=report.versions_destroyed,
        )
        log.warning(
            "suppression ledger: replayed %d entries, %d subjects still present, %d versions destroyed",
            len(pending),
            report.subjects_found,
            len(report.versions_destroyed),
        )
    suppression_repo.record(session, end, now, force=True)
    return report


def _apply(
    session: Session,
    ledger: SuppressionLedger,
    entry: LedgerEntry,
    user_id: str | None,
    report: ReplayReport,
    now: datetime,
) -> None:
    if user_id is None:
        return
    if entry.item_hashes is None:
        rows = catalog_repo.delete_scope_rows(session, user_id, None)
        profile = catalog_repo.delete_profile(session, user_id)
    else:
        wanted = set(entry.item_hashes)
        items = sorted(
            i
            for i in catalog_repo.user_item_ids(session, user_id)
            if ledger.item_hash(entry.user_hash, i) in wanted
        )
        rows = catalog_repo.delete_scope_rows(session, user_id, items) if items else 0
        profile = False
    if not rows and not profile:
        return
    report.subjects_found += 1
    report.rows_deleted += rows
    report.profiles_deleted += int(profile)
    # versions made before the deletion may have trained on the data, unless the registry records them
    # free of a request of this subject (the child of the very job that deleted it)
    requests = erasure_repo.ids_by_user_hash(session, entry.user_hash)
    for version in adapter_repo.with_files(session):
        if version.created_at < entry.deleted_at and not requests & adapter_repo.clean_of(
            session, version.id
        ):
            registry.delete_artifact(version.artifact_path)
            registry.mark_destroyed(session, version.id, ACTOR, "created before a replayed erasure", now)
            report.versions_destroyed.append(version.id)


def ensure_replayed(session: Session, ledger: SuppressionLedger, now: datetime) -> ReplayReport | None:
    """Replay the ledger if this database has not applied all of it (None when it has).  Flushes only."""
    if ledger_status(session, ledger).caught_up:
        return None
    return replay(session, ledger, now)
