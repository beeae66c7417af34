"""The audit log's export: JSON lines, filtered by time range and kind, read in pages (each page a short
transaction of its own) so that an export of any size streams in constant memory."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import AuditEntry
from core.db.repositories import audit as audit_repo
from core.services.errors import InvalidInput

KIND_PATTERN = r"[a-z][a-z_]{0,31}(\.[a-z_]{1,32})?"


@dataclass(frozen=True)
class AuditFilter:
    """Entries at or after ``since`` and before ``until`` (None: unbounded), whose action is one of
    ``kinds`` or starts with one of them and a dot (``erasure`` takes ``erasure.completed``; empty: all)."""

    since: datetime | None = None
    until: datetime | None = None
    kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise InvalidInput("give times with their UTC offset (2026-11-26T00:00:00Z)")
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("since must come before until")
        for kind in self.kinds:
            if not re.fullmatch(KIND_PATTERN, kind):
                raise InvalidInput(
                    f"a kind is an action or its prefix ({KIND_PATTERN}): erasure, api_key.created"
                )


def entry_record(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "subject_type": entry.subject_type,
        "subject_id": entry.subject_id,
        "details": entry.details,
    }


def export_audit(session: Session, wanted: AuditFilter, page_size: int = 1000) -> Iterator[dict[str, Any]]:
    """The matching entries, oldest first, as plain records; ends each page's transaction before yielding
    it (the caller may take its time over the lines)."""
    after = 0
    while True:
        page = audit_repo.entries_page(
            session, wanted.since, wanted.until, wanted.kinds, after_id=after, limit=page_size
        )
        records = [entry_record(entry) for entry in page]
        session.rollback()  # reads only: no transaction stays open while the lines are sent
        yield from records
        if len(page) < page_size:
            return
        after = records[-1]["id"]


def kinds_of(values: Sequence[str]) -> tuple[str, ...]:
    """Kinds from a comma-separated option or repeated parameters."""
    return tuple(k.strip() for value in values for k in value.split(",") if k.strip())
