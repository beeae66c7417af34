"""Importing one's own data into the registry (SQLite and PostgreSQL): items added or updated, ratings as
new interactions, all or nothing with file/line/column, erased data and stored ratings refused."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import AuditEntry, ErasureStatus, Interaction, Item, UserProfile, utcnow
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import erasures as erasure_repo
from core.ml.data import CsvSource, PreparedData
from core.services.erasures import IntakeConfig, create_erasure_request
from core.services.errors import Conflict, ImportRefused, InvalidInput
from core.services.imports import ImportConfig, import_data
from tests.adapters import register_placeholder_version

SALT = "test-salt"
CONFIG = ImportConfig(salt=SALT, history_len=3)
ITEMS = CsvSource("items.csv", "item,title,genres\ni0,Renamed,Drama\nn1,New Film,Comedy|Drama\n")


@pytest.fixture
def registry_ready(session: Session, seeded: PreparedData) -> Session:
    register_placeholder_version(session)
    return session


def _counts(session: Session) -> tuple[int, int, int]:
    return (
        session.scalar(select(func.count(Interaction.id))) or 0,
        session.scalar(select(func.count()).select_from(Item)) or 0,
        session.scalar(select(func.count()).select_from(UserProfile)) or 0,
    )


def test_import_adds_items_updates_titles_and_adds_new_ratings(registry_ready: Session) -> None:
    session = registry_ready
    u0_items = catalog_repo.user_item_ids(session, "u0")
    unrated = sorted({f"i{i}" for i in range(20)} - u0_items)[0]
    ratings = CsvSource(
        "ratings.csv",
        "user,item,rating,timestamp\n"
        f"x1,n1,5,10\nx1,i0,2,20\nx1,i3,4,30\nu0,n1,4,99999999\nu0,{unrated},1,99999999\n",
    )
    users = CsvSource("users.csv", "user,age,gender,occupation\nx1,41,M,chef\nu0,31,F,editor\n")
    before = _counts(session)

    report = import_data(session, ratings, ITEMS, users, CONFIG, actor="test")
    session.commit()

    assert (report.items_added, report.items_updated, report.items_unchanged) == (1, 1, 0)
    assert (report.profiles_added, report.profiles_updated) == (1, 1)
    assert (report.ratings_added, report.users_rated) == (5, 2)
    assert _counts(session) == (before[0] + 5, before[1] + 1, before[2] + 1)
    assert catalog_repo.titles(session)["i0"] == "Renamed"
    assert session.get(Item, "n1").genres == "Comedy|Drama"  # type: ignore[union-attr]
    assert catalog_repo.profiles(session, ["u0"])["u0"]["occupation"] == "editor"
    new = catalog_repo.usable_interactions(session, splits=["new"])
    assert len(new) == 5
    x1 = new[new.user_id == "x1"].set_index("item_id")
    assert x1.loc["n1", "history"] == "" and x1.loc["i3", "history"] == "n1:5|i0:2"
    assert list(x1["label"]) == [1, 0, 1]  # like = rating > 3, as for ratings added through the API
    u0_new = new[new.user_id == "u0"]
    assert all(h.count(":") == 3 for h in u0_new["history"])  # histories reach into u0's stored ratings
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "data.imported")).one()
    assert audit.details["ratings_added"] == 5 and "x1" not in str(audit.details) + audit.subject_id


def test_a_bad_file_is_refused_with_its_location_and_changes_nothing(registry_ready: Session) -> None:
    session = registry_ready
    before = _counts(session)
    ratings = CsvSource("mine.csv", "user,item,rating,timestamp\nx1,n1,5,10\nx1,i0,lots,20\n")
    with pytest.raises(InvalidInput) as error:
        import_data(session, ratings, ITEMS, None, CONFIG)
    assert error.value.details == {"file": "mine.csv", "line": 3, "column": "rating"}
    assert "mine.csv: line 3, column 'rating'" in str(error.value)
    unknown = CsvSource("mine.csv", "user,item,rating,timestamp\nx1,zz,5,10\n")
    with pytest.raises(InvalidInput, match="line 2, column 'item': unknown item 'zz'"):
        import_data(session, unknown, ITEMS, None, CONFIG)
    session.rollback()
    assert _counts(session) == before
    assert catalog_repo.titles(session)["i0"] == "Movie 0"


def test_ratings_of_erased_users_and_items_are_refused(registry_ready: Session) -> None:
    session = registry_ready
    intake = IntakeConfig(salt=SALT)
    create_erasure_request(session, "u1", None, intake)  # pending, whole user
    u2_item = sorted(catalog_repo.user_item_ids(session, "u2"))[0]
    done, _ = create_erasure_request(session, "u2", [u2_item], intake)
    # completed: rows deleted and the user id redacted; only HMAC(salt, user id) is left
    catalog_repo.delete_scope_rows(session, "u2", [u2_item])
    pending = [ErasureStatus.RECEIVED]
    erasure_repo.transition(session, [done.id], pending, ErasureStatus.COMPLETED, utcnow(), user_id=None)
    session.commit()
    before = _counts(session)
    ratings = CsvSource(
        "r.csv", f"user,item,rating,timestamp\nx1,n1,5,10\nu1,n1,4,11\nu2,{u2_item},5,12\nu2,n1,3,13\n"
    )
    users = CsvSource("u.csv", "user\nu1\nx1\n")
    with pytest.raises(ImportRefused) as error:
        import_data(session, ratings, ITEMS, users, CONFIG)
    details = error.value.details
    assert (details["file"], details["line"], details["column"]) == ("r.csv", 3, "user")
    assert [(r["file"], r["column"], r["lines"]) for r in details["refused"]] == [  # type: ignore[attr-defined]
        ("r.csv", "user", [3]),
        ("r.csv", "item", [4]),
        ("u.csv", "user", [2]),
    ]
    assert "u1" not in str(error.value) and "u2" not in str(error.value)
    session.rollback()
    assert _counts(session) == before
    allowed = CsvSource("r.csv", "user,item,rating,timestamp\nx1,n1,5,10\nu2,n1,3,13\n")
    assert import_data(session, allowed, ITEMS, None, CONFIG).ratings_added == 2


def test_a_rating_already_stored_is_refused_not_updated(registry_ready: Session) -> None:
    session = registry_ready
    rated = sorted(catalog_repo.user_item_ids(session, "u3"))[0]
    ratings = CsvSource("r.csv", f"user,item,rating,timestamp\nu3,n1,5,10\nu3,{rated},1,11\n")
    with pytest.raises(ImportRefused, match=r"already stored.*r\.csv: 1 row\(s\), lines 3, column 'item'"):
        import_data(session, ratings, ITEMS, None, CONFIG)


def test_an_uninitialised_registry_refuses_imports(session: Session, seeded: PreparedData) -> None:
    ratings = CsvSource("r.csv", "user,item,rating,timestamp\nx1,n1,5,10\n")
    with pytest.raises(Conflict, match="e2u data prepare"):
        import_data(session, ratings, ITEMS, None, CONFIG)


def test_ratings_of_a_user_whose_data_went_without_unlearning_are_refused(registry_ready: Session) -> None:
    session = registry_ready
    request, _ = create_erasure_request(session, "u3", None, IntakeConfig(salt=SALT))
    # unlearning failed for good: the data was deleted all the same (core.services.pipeline._fail)
    catalog_repo.delete_scope_rows(session, "u3", None)
    pending, failed = [ErasureStatus.RECEIVED], ErasureStatus.NOT_UNLEARNED
    now = utcnow()
    erasure_repo.transition(session, [request.id], pending, failed, now, failed_at=now, user_id=None)
    session.commit()
    before = _counts(session)
    with pytest.raises(ImportRefused):
        import_data(
            session, CsvSource("r.csv", "user,item,rating,timestamp\nu3,n1,5,10\n"), ITEMS, None, CONFIG
        )
    session.rollback()
    assert _counts(session) == before


def _write_ratings(path: Path, users: int, per_user: int = 20) -> Path:
    """``users`` new users rating ``per_user`` of the items n0.. each (half stars)."""
    with path.open("w") as out:
        out.write("user,item,rating,timestamp\n")
        for user in range(users):
            for k in range(per_user):
                out.write(f"m{user},n{(user + k) % 50},{1 + (user + k) % 9 / 2},{1000 + k}\n")
    return path


def _import_peak(session: Session, ratings: Path, items: Path) -> tuple[int, int]:
    """(ratings added, tracemalloc's peak bytes) of one import, rolled back after."""
    tracemalloc.start()
    try:
        report = import_data(session, ratings, items, None, CONFIG)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    session.rollback()
    return report.ratings_added, peak


def test_import_memory_stays_bounded_as_the_ratings_file_grows(
    registry_ready: Session, tmp_path: Path
) -> None:
    """Streamed: eight times the ratings, about the same peak (one chunk and one page of users at a time).
    Reading the whole file into frames grew the peak with the file (SQLite, 2,000 -> 16,000 rows: 5.3 ->
    31 MB before; 5.1 -> 4.6 MB streamed)."""
    session = registry_ready
    items = tmp_path / "movies.csv"
    items.write_text("item,title,genres\n" + "".join(f'n{i},"Film {i}, The",Drama\n' for i in range(50)))
    small = _import_peak(session, _write_ratings(tmp_path / "small.csv", users=100), items)
    large = _import_peak(session, _write_ratings(tmp_path / "large.csv", users=800), items)
    assert (small[0], large[0]) == (2000, 16000)
    assert large[1] < 1.5 * small[1], (small, large)
