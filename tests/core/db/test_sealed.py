"""Crypto-shredding at rest: ratings and profiles are stored sealed; erasing a whole user destroys their
data key, so the copies the database keeps of deleted rows (SQLite's freed pages and WAL, PostgreSQL's
old row versions) hold nothing readable; an item-scope erasure re-seals the rest under a new key."""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.load import throwaway_schema
from core.data_keys import DataKeyError, Keyring, SealedRating, Wrapped, create_kek_file
from core.db.engine import KEYRING_INFO, checkpoint_wal, is_sqlite, make_engine
from core.db.migrate import upgrade
from core.db.models import Interaction, UserDataKey, utcnow
from core.db.repositories import catalog as catalog_repo
from core.db.repositories.catalog import StoredRating
from core.ml.data import PreparedData
from core.services.data_keys import rotate_kek
from tests.core.conftest import PG_DSN, PG_URL

SUBJECT = "subject-7f3a9c"
HISTORY = "i1:5|canaryhistory5e1d:1"  # a marker that only a readable rating can show
OCCUPATION = "canary-occupation-b2c4"


def _add_subject(session: Session) -> None:
    now = utcnow()
    rows = [StoredRating(SUBJECT, f"i{n}", 4.5, 1_000 + n, 1, HISTORY, "train", now) for n in range(3, 6)]
    catalog_repo.insert_interactions(session, rows)
    catalog_repo.insert_rows(
        session,
        catalog_repo.UserProfile,
        [{"user_id": SUBJECT, "age": "41", "gender": "F", "occupation": OCCUPATION}],
    )
    session.commit()


def _raw_bytes(session: Session) -> bytes:
    """What the database keeps on disk for the catalog: SQLite's file and WAL; PostgreSQL's heap pages
    of the three tables, dead row versions included (``pageinspect``'s ``get_raw_page``)."""
    if is_sqlite(session):
        path = Path(str(session.get_bind().url.database))
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    with psycopg.connect(PG_DSN, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS pageinspect SCHEMA public")
    schema = session.execute(text("SELECT current_schema()")).scalar_one()
    pages = []
    for table in ("interactions", "user_profiles", "user_data_keys"):
        name = f'"{schema}".{table}'
        count = session.execute(text(f"SELECT pg_relation_size('{name}') / 8192")).scalar_one()
        for page in range(int(count)):
            raw = session.execute(text(f"SELECT public.get_raw_page('{name}', {page})")).scalar_one()
            pages.append(bytes(raw))
    session.rollback()
    return b"".join(pages)


def test_ratings_and_profiles_are_stored_sealed(session: Session, seeded: PreparedData) -> None:
    _add_subject(session)
    assert SUBJECT.encode() in _raw_bytes(session)  # ids stay in clear (joins and scopes) ...
    raw = _raw_bytes(session)
    assert b"canaryhistory5e1d" not in raw and OCCUPATION.encode() not in raw  # ... what they say does not
    # and every reader opens them
    rows = catalog_repo.usable_interactions(session, user_id=SUBJECT)
    assert list(rows["history"]) == [HISTORY] * 3 and list(rows["rating"]) == [4.5] * 3
    assert catalog_repo.profiles(session, [SUBJECT])[SUBJECT]["occupation"] == OCCUPATION


def test_a_blob_moved_to_another_row_does_not_open(session: Session, seeded: PreparedData) -> None:
    _add_subject(session)
    first, second = session.scalars(select(Interaction).where(Interaction.user_id == SUBJECT)).all()[:2]
    first.sealed = second.sealed
    session.commit()
    with pytest.raises(DataKeyError, match="does not open"):
        catalog_repo.usable_interactions(session, user_id=SUBJECT)


def test_a_session_without_a_keyring_reads_nothing(
    session_factory: sessionmaker[Session], seeded: PreparedData
) -> None:
    bare = sessionmaker(bind=session_factory.kw["bind"])
    with bare() as session, pytest.raises(DataKeyError, match="carries no keyring"):
        catalog_repo.usable_interactions(session)


def test_whole_user_erasure_leaves_no_readable_rating_in_the_database_files(
    session: Session, seeded: PreparedData, keyring: Keyring
) -> None:
    _add_subject(session)
    stored = session.execute(
        select(UserDataKey.kek_id, UserDataKey.wrapped_key).where(UserDataKey.user_id == SUBJECT)
    ).one()
    wrapped = Wrapped(stored[0], bytes(stored[1]))
    blobs = [
        (item, bytes(blob))
        for item, blob in session.execute(
            select(Interaction.item_id, Interaction.sealed).where(Interaction.user_id == SUBJECT)
        )
    ]
    assert catalog_repo.delete_scope_rows(session, SUBJECT, None) == 3
    assert catalog_repo.delete_profile(session, SUBJECT)
    session.commit()
    assert catalog_repo.data_keys(session, [SUBJECT]) == {}
    raw = _raw_bytes(session)
    assert b"canaryhistory5e1d" not in raw and OCCUPATION.encode() not in raw
    if is_sqlite(session):
        assert checkpoint_wal(session.get_bind())  # what the worker does after each job
        raw = _raw_bytes(session)
        # secure_delete zeroed the rows and the key row: nothing of the subject is left at all
        assert SUBJECT.encode() not in raw and wrapped.blob not in raw
        assert not any(blob in raw for _, blob in blobs)
        return
    # PostgreSQL keeps the deleted row versions in its pages (and WAL, replicas, backups) ...
    assert all(blob in raw for _, blob in blobs) and wrapped.blob in raw
    # ... sealed, under a key whose only copies are wrapped under the KEK: once the KEK is rotated, the
    # deleted key row's old versions no longer unwrap, and the old rows cannot be opened by anyone
    keyring.unwrap(SUBJECT, wrapped)  # before the rotation an old copy of the key row still opens
    sessions = sessionmaker(bind=session.get_bind(), info=dict(session.info))
    rotation = rotate_kek(sessions, actor="test")
    assert rotation.retired == [wrapped.kek_id] and rotation.rewrapped == len(seeded.users)
    keyring.forget()
    with pytest.raises(DataKeyError, match="retired or unknown"):
        keyring.unwrap(SUBJECT, wrapped)
    survivors = catalog_repo.usable_interactions(session)  # every live user still reads
    assert len(survivors) == len(seeded.samples)


def test_item_scope_erasure_reseals_the_rest_under_a_new_key(
    session: Session, seeded: PreparedData, keyring: Keyring
) -> None:
    _add_subject(session)
    old_key = catalog_repo.data_keys(session, [SUBJECT])[SUBJECT]
    old_blob = session.execute(
        select(Interaction.sealed).where(Interaction.user_id == SUBJECT, Interaction.item_id == "i4")
    ).scalar_one()
    assert SealedRating.open(old_key, SUBJECT, "i4", bytes(old_blob)).history == HISTORY
    assert catalog_repo.delete_scope_rows(session, SUBJECT, ["i3"]) == 1
    session.commit()
    new_key = catalog_repo.data_keys(session, [SUBJECT])[SUBJECT]
    assert new_key.key != old_key.key
    rows = catalog_repo.usable_interactions(session, user_id=SUBJECT)
    assert sorted(rows["item_id"]) == ["i4", "i5"] and list(rows["history"]) == [HISTORY] * 2
    assert catalog_repo.profiles(session, [SUBJECT])[SUBJECT]["occupation"] == OCCUPATION
    new_blob = session.execute(
        select(Interaction.sealed).where(Interaction.user_id == SUBJECT, Interaction.item_id == "i4")
    ).scalar_one()
    with pytest.raises(DataKeyError):  # the rows as they are now do not open under the old key
        SealedRating.open(old_key, SUBJECT, "i4", bytes(new_blob))


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_0004_seals_the_stored_ratings_and_drops_the_clear_columns(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("E2U_DATA_KEK_FILE", raising=False)
    with contextlib.ExitStack() as stack:
        if dialect == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.sqlite'}"
        else:
            url = stack.enter_context(throwaway_schema(PG_URL))
        _seal_by_migration(url, tmp_path)


def _seal_by_migration(url: str, tmp_path: Path) -> None:
    """Rows stored by revision 0003 in clear, migrated to 0004: sealed, read back the same."""
    upgrade(url, "0003")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO items (item_id, title, genres) VALUES ('i1', 'A', ''), ('i2', 'B', '')")
        )
        connection.execute(
            text(
                "INSERT INTO interactions (user_id, item_id, rating, timestamp, label, history, split, "
                "created_at) VALUES (:u, :i, :r, :t, :l, :h, 'train', :c)"
            ),
            [
                {"u": SUBJECT, "i": "i1", "r": 4.5, "t": 100, "l": 1, "h": "", "c": datetime(2026, 1, 1)},
                {
                    "u": SUBJECT,
                    "i": "i2",
                    "r": 1.0,
                    "t": 200,
                    "l": 0,
                    "h": "i1:4.5",
                    "c": datetime(2026, 1, 1),
                },
            ],
        )
        connection.execute(
            text("INSERT INTO user_profiles (user_id, age, gender, occupation) VALUES (:u, '41', 'F', :o)"),
            {"u": SUBJECT, "o": OCCUPATION},
        )
    kek = tmp_path / "data-kek"
    create_kek_file(kek)
    upgrade(url, kek_file=kek)
    with engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("interactions")}
        profile_columns = {c["name"] for c in inspect(connection).get_columns("user_profiles")}
    assert not {"rating", "timestamp", "label", "history"} & columns and "sealed" in columns
    assert not {"age", "gender", "occupation"} & profile_columns
    with sessionmaker(bind=engine, info={KEYRING_INFO: Keyring(kek)})() as session:
        rows = catalog_repo.usable_interactions(session)
        assert [tuple(r) for r in rows[["item_id", "rating", "timestamp", "label", "history"]].values] == [
            ("i1", 4.5, 100, 1, ""),
            ("i2", 1.0, 200, 0, "i1:4.5"),
        ]
        assert catalog_repo.profiles(session)[SUBJECT] == {
            "age": "41",
            "gender": "F",
            "occupation": OCCUPATION,
        }
    engine.dispose()
