"""How far this database has applied the suppression ledger (``core.suppression``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.db.engine import is_sqlite
from core.db.models import SuppressionReplay
from core.suppression import LedgerPosition

NAME = "default"
EMPTY = LedgerPosition(0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")  # sha256(b"")


def applied(session: Session) -> LedgerPosition:
    """The ledger position this database has applied (the empty ledger when none is recorded)."""
    row = session.execute(
        select(SuppressionReplay.entries, SuppressionReplay.digest).where(SuppressionReplay.name == NAME)
    ).first()
    return EMPTY if row is None else LedgerPosition(int(row[0]), str(row[1]))


def record(session: Session, position: LedgerPosition, now: datetime, force: bool = False) -> None:
    """Record ``position`` as applied.  Unless ``force`` (a replay), never move back: two jobs that
    appended at once may record in either order."""
    table = SuppressionReplay.__table__
    dialect_insert = sqlite.insert if is_sqlite(session) else postgresql.insert
    values = {"entries": position.entries, "digest": position.digest, "updated_at": now}
    statement = dialect_insert(SuppressionReplay).values(name=NAME, **values)
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_=values,
        where=None if force else table.c.entries <= position.entries,
    )
    session.execute(statement)
    session.flush()
