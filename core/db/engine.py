"""Engine and session factory, plus the one SQLite/PostgreSQL difference the services care about:
taking the write lock before a read-then-write claim (``lock_for_claim``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from core.data_keys import Keyring

SQLITE_BUSY_TIMEOUT_MS = 30_000
KEYRING_INFO = "keyring"  # the Session.info entry that holds the process's Keyring (the catalog reads it)


@dataclass(frozen=True)
class PoolConfig:
    """Connections of one engine: ``size`` kept open, ``max_overflow`` more under load, a checkout waits
    at most ``timeout_seconds`` (then ``sqlalchemy.exc.TimeoutError``)."""

    size: int = 5
    max_overflow: int = 10
    timeout_seconds: float = 30.0

    @property
    def capacity(self) -> int:
        """The most connections checked out at once."""
        return self.size + self.max_overflow

    def engine_arguments(self) -> dict[str, Any]:
        return {
            "pool_size": self.size,
            "max_overflow": self.max_overflow,
            "pool_timeout": self.timeout_seconds,
        }


def is_sqlite(session_or_engine: Session | Engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "sqlite"


def make_engine(url: str, pool: PoolConfig | None = None, **kwargs: Any) -> Engine:
    """A new engine (with ``pool``'s sizes, else SQLAlchemy's).  SQLite gets WAL, foreign keys and a busy
    timeout so that the API and a worker process can share one file.  SQL parameters are left out of
    error texts (``hide_parameters``): they carry user ids and ratings into tracebacks and logs."""
    in_memory = url.startswith("sqlite") and url.split("///", 1)[-1] in ("", ":memory:")
    if pool is not None and not in_memory:  # an in-memory database has a single connection
        kwargs = {**pool.engine_arguments(), **kwargs}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=True, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            # erased rows are overwritten with zeros, not left readable in free pages of the file
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)


def checkpoint_wal(engine: Engine) -> bool:
    """After deleting erased rows on SQLite: copy the WAL into the database file and truncate the WAL to
    zero bytes, so that the deleted rows' old pages do not stay readable in it (``secure_delete`` zeroes
    them in the file itself).  Waits up to the busy timeout for readers of older snapshots; returns
    whether the WAL is empty now.  Does nothing (True) on other databases: see docs/privacy.md."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as connection:
        busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    return busy == 0


@lru_cache(maxsize=8)
def engine_for(url: str, pool: PoolConfig | None = None) -> Engine:
    """One engine per URL (and pool configuration) per process."""
    return make_engine(url, pool)


def session_factory(url_or_engine: str | Engine, keyring: Keyring | None = None) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (the edge commits, then reads ids).
    ``keyring``: the data keys' keyring, which every read or write of ratings and profiles needs
    (``core.db.repositories.catalog``); sessions without one refuse those."""
    engine = engine_for(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    info = {} if keyring is None else {KEYRING_INFO: keyring}
    return sessionmaker(bind=engine, expire_on_commit=False, info=info)


def lock_for_claim(session: Session) -> None:
    """Start the current transaction as a writer on SQLite (``BEGIN IMMEDIATE`` semantics).

    SQLite has one writer; a no-op UPDATE as the transaction's first statement takes the write lock, so the
    reads that follow cannot be overtaken by another claimer.  On PostgreSQL the claim queries use
    ``FOR UPDATE SKIP LOCKED`` instead and this does nothing.
    """
    if is_sqlite(session):
        session.execute(text("UPDATE unlearning_jobs SET id = id WHERE 1 = 0"))
