"""A temporary table holding one import's ratings (``core.services.imports``), so that a ratings file of
any size is checked (duplicates, erased data, ratings already stored) and written in bounded memory.  It
lives on the session's connection only, inside the import's transaction, and is dropped at its end."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, func, select
from sqlalchemy.orm import Session

STAGED = Table(
    "import_staged_ratings",
    MetaData(),
    Column("line", Integer, primary_key=True),  # the file's 1-based line
    Column("user_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("rating", Float, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Index("ix_import_staged_ratings_pair", "user_id", "item_id"),
    prefixes=["TEMPORARY"],
)


def create(session: Session) -> None:
    """An empty staging table on the session's connection (one left by an earlier import is replaced)."""
    connection = session.connection()
    STAGED.drop(connection, checkfirst=True)
    STAGED.create(connection)


def drop(session: Session) -> None:
    STAGED.drop(session.connection(), checkfirst=True)


def add(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Stage rows ``{"line", "user_id", "item_id", "rating", "timestamp"}``."""
    if rows:
        session.execute(STAGED.insert(), list(rows))


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(STAGED)) or 0)


def first_duplicate(session: Session) -> tuple[int, int, str] | None:
    """The first line that rates a (user, item) pair again: (that line, the pair's first line, item).
    One window over the pairs (sorted once), not a self-join: a file that repeats one pair n times made
    the join compare n^2 rows (a 1 MiB file ran for minutes)."""
    pair = (STAGED.c.user_id, STAGED.c.item_id)
    ranked = select(
        STAGED.c.line, STAGED.c.item_id, func.min(STAGED.c.line).over(partition_by=pair).label("first_line")
    ).subquery()
    query = (
        select(ranked.c.line, ranked.c.first_line, ranked.c.item_id)
        .where(ranked.c.line > ranked.c.first_line)
        .order_by(ranked.c.line)
        .limit(1)
    )
    row = session.execute(query).first()
    return None if row is None else (int(row[0]), int(row[1]), str(row[2]))


def user_pages(session: Session, page_size: int) -> Iterator[list[str]]:
    """The staged users in pages of ``page_size``, in id order (keyset pagination: never all at once)."""
    last: str | None = None
    while True:
        query = select(STAGED.c.user_id).distinct().order_by(STAGED.c.user_id).limit(page_size)
        if last is not None:
            query = query.where(STAGED.c.user_id > last)
        page = [str(u) for u in session.scalars(query)]
        if not page:
            return
        yield page
        last = page[-1]


def rows_of(session: Session, user_ids: Sequence[str]) -> list[tuple[int, str, str, float, int]]:
    """The staged (line, user, item, rating, timestamp) rows of ``user_ids``, by user then time."""
    query = (
        select(STAGED.c.line, STAGED.c.user_id, STAGED.c.item_id, STAGED.c.rating, STAGED.c.timestamp)
        .where(STAGED.c.user_id.in_(list(user_ids)))
        .order_by(STAGED.c.user_id, STAGED.c.timestamp, STAGED.c.item_id)
    )
    return [(int(a), str(u), str(i), float(r), int(t)) for a, u, i, r, t in session.execute(query)]
