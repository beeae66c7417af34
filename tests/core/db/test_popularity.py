"""Candidates without a candidate list come from a ranking the database keeps (``item_popularity``),
not from counting every stored rating per request: the same answer as a full count, on SQLite and
PostgreSQL, through imports, new ratings, erasures (live, cancelled, carried out) and item changes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from core.db.models import Interaction, ItemPopularity
from core.db.repositories import catalog as catalog_repo
from core.ml.data import PreparedData
from core.services.erasures import IntakeConfig, cancel_erasure_request, create_erasure_request
from core.services.recommendations import NewRating, add_interactions

INTAKE = IntakeConfig(salt="test-salt")


def _full_count(session: Session, user_id: str, limit: int) -> list[str]:
    """The definition: count the usable ratings of every item, leave out the user's usable items."""
    rows = catalog_repo.usable_interactions(session)
    seen = set(rows.loc[rows["user_id"] == user_id, "item_id"])
    counts = Counter(str(i) for i in rows["item_id"])
    ranked = sorted((-n, item) for item, n in counts.items() if item not in seen)
    return [item for _, item in ranked[:limit]]


def _stored_counts(session: Session) -> tuple[dict[str, int], dict[str, int]]:
    """(the maintained counts, a fresh count of the interactions table), items with no rating left out."""
    kept = {
        str(i): int(n) for i, n in session.execute(select(ItemPopularity.item_id, ItemPopularity.ratings))
    }
    fresh = select(Interaction.item_id, func.count()).group_by(Interaction.item_id)
    return {i: n for i, n in kept.items() if n}, {str(i): int(n) for i, n in session.execute(fresh)}


def _check_every_user(session: Session, users: list[str]) -> None:
    for user in users:
        for limit in (1, 3, 7, 100):
            assert catalog_repo.popular_unseen_items(session, user, limit) == _full_count(
                session, user, limit
            )


def test_popular_unseen_items_equals_a_full_count_through_every_change(
    session: Session, seeded: PreparedData
) -> None:
    users = sorted(set(seeded.samples["user_id"]))
    kept, fresh = _stored_counts(session)
    assert kept == fresh and sum(kept.values()) == len(seeded.samples)
    _check_every_user(session, users)

    # live scopes: a whole user, one item of another, and a cancelled one (its rows count again)
    create_erasure_request(session, users[3], None, INTAKE)
    own = seeded.samples[seeded.samples["user_id"] == users[1]]
    create_erasure_request(session, users[1], [str(own.iloc[0]["item_id"])], INTAKE)
    cancelled, _ = create_erasure_request(session, users[5], None, INTAKE)
    cancel_erasure_request(session, cancelled.id)
    session.commit()
    _check_every_user(session, users)

    # new ratings of a user (unseen items), then erasures carried out (rows deleted)
    unseen = sorted(set(seeded.items["item_id"]) - catalog_repo.user_item_ids(session, users[0]))
    add_interactions(session, users[0], [NewRating(i, 5.0, 1_000 + k) for k, i in enumerate(unseen[:3])], 3)
    catalog_repo.delete_scope_rows(session, users[3], None)
    some_item = sorted(catalog_repo.user_item_ids(session, users[2]))[0]
    catalog_repo.delete_scope_rows(session, users[2], [some_item])
    session.commit()
    kept, fresh = _stored_counts(session)
    assert kept == fresh
    _check_every_user(session, users)

    # an item changed in place (no code path does it; the trigger keeps the count right all the same)
    moved = session.execute(select(Interaction.id, Interaction.user_id).limit(1)).one()
    free = sorted(set(seeded.items["item_id"]) - catalog_repo.user_item_ids(session, moved.user_id))[0]
    move = text("UPDATE interactions SET item_id = :item WHERE id = :id")
    session.execute(move, {"item": free, "id": moved.id})
    session.commit()
    kept, fresh = _stored_counts(session)
    assert kept == fresh


def test_popular_unseen_items_reads_no_whole_ratings_table(session: Session, seeded: PreparedData) -> None:
    # every statement it runs, explained: a full pass over ``interactions`` (SCAN, not SEARCH by an index)
    # is what made each request cost the whole table; PostgreSQL's planner picks sequential scans on a
    # table this small, so the plans are checked on SQLite (the benchmark records both at 1M items)
    if session.get_bind().dialect.name != "sqlite":
        return
    user = sorted(set(seeded.samples["user_id"]))[0]
    create_erasure_request(session, user, None, INTAKE)  # a live scope: its rows are read too
    other = sorted(set(seeded.samples["user_id"]))[1]
    session.commit()
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", record)
    try:
        assert catalog_repo.popular_unseen_items(session, other, 5)
    finally:
        event.remove(connection, "before_cursor_execute", record)
    assert statements
    raw = connection.connection.driver_connection
    assert raw is not None
    for statement, parameters in statements:
        plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
        assert not [step for step in plan if step.startswith("SCAN interactions")], (statement, plan)
