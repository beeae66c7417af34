"""What the engine lets out of the database: no SQL parameters in error texts, no deleted rows in SQLite's
WAL once a job has emptied it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.db.engine import checkpoint_wal, make_engine
from core.db.models import Interaction, Item, UserProfile
from core.redaction import redacted_traceback

SUBJECT = "subject-7f3a9c"  # long enough to be searched for in a file's bytes


def test_error_texts_carry_no_sql_parameters(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        session.add(UserProfile(user_id=SUBJECT, sealed=b"surgeon"))
        session.commit()
        session.add(UserProfile(user_id=SUBJECT, sealed=b"surgeon"))
        with pytest.raises(IntegrityError) as raised:
            session.commit()
    text = str(raised.value)
    assert "INSERT INTO user_profiles" in text  # the statement stays, for debugging
    assert "surgeon" not in text  # the parameters go
    # ... but PostgreSQL's own detail names the duplicate key: only the class and the frames leave
    summary = redacted_traceback(raised.value)
    assert "IntegrityError (message withheld)" in summary and "test_engine.py" in summary
    assert SUBJECT not in summary and "surgeon" not in summary


def test_wal_checkpoint_leaves_no_deleted_row_in_the_files(tmp_path: Path, sqlite_template: Path) -> None:
    path = tmp_path / "e2u.sqlite"
    path.write_bytes(sqlite_template.read_bytes())
    engine = make_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        session.add_all(Item(item_id=f"i{n}", title=f"Item {n}") for n in range(3))
        session.flush()
        session.add_all(
            Interaction(user_id=SUBJECT, item_id=f"i{n}", sealed=b"4.0", split="train") for n in range(3)
        )
        session.add(UserProfile(user_id=SUBJECT, sealed=b"surgeon"))
        session.commit()
        session.execute(delete(Interaction).where(Interaction.user_id == SUBJECT))
        session.execute(delete(UserProfile).where(UserProfile.user_id == SUBJECT))
        session.commit()
    wal = path.with_name(path.name + "-wal")

    def readable() -> bool:
        return any(SUBJECT.encode() in p.read_bytes() for p in (path, wal) if p.exists())

    assert readable()  # deleted, yet the WAL still holds the pages written before the delete
    assert checkpoint_wal(engine)
    assert wal.stat().st_size == 0 and not readable()
    engine.dispose()
