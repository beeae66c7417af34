"""Items, user profiles and interactions, and the one rule every reader of them follows: data under a live
erasure scope is never returned (``usable_interactions``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from core.db.models import (
    EXCLUDING_ERASURE_STATUSES,
    ErasureRequest,
    ErasureScopeItem,
    Interaction,
    Item,
    UserProfile,
)
from core.ml.data import decode_history, encode_history

SAMPLE_FRAME_COLUMNS = ["id", "user_id", "item_id", "rating", "timestamp", "label", "history", "split"]


def _in_scope_of(request: Any) -> Any:
    """The interaction row of the enclosing query lies in ``request``'s scope (whole user or listed item)."""
    listed = (
        exists()
        .where(ErasureScopeItem.request_id == request.id, ErasureScopeItem.item_id == Interaction.item_id)
        .correlate_except(ErasureScopeItem)
    )
    return or_(request.scope == "user", listed)


def _not_excluded() -> Any:
    request = aliased(ErasureRequest)
    in_scope = _in_scope_of(request)
    return ~exists().where(
        request.user_id == Interaction.user_id,
        request.status.in_(sorted(EXCLUDING_ERASURE_STATUSES)),
        in_scope,
    )


@dataclass(frozen=True)
class ExcludedScopes:
    users: frozenset[str]  # whole users under a live erasure
    items: dict[str, set[str]]  # user -> items under a live partial erasure

    def allows(self, user_id: str, item_id: str) -> bool:
        return user_id not in self.users and item_id not in self.items.get(user_id, set())

    def covers(self, user_id: str, item_id: str, history: str) -> bool:
        """Whether a sample lies in these scopes: its user or its item is erased, or its prompt history
        mentions an erased item of its user (that prompt carries the erased rating too)."""
        return not self.allows(user_id, item_id) or any(
            not self.allows(user_id, i) for i, _ in decode_history(history)
        )

    def covered(self, frame: pd.DataFrame) -> list[bool]:
        """``covers`` for each row of a sample frame."""
        columns = (frame["user_id"], frame["item_id"], frame["history"])
        return [self.covers(u, i, h) for u, i, h in zip(*columns, strict=True)]


def excluded_scopes(session: Session, user_ids: Iterable[str] | None = None) -> ExcludedScopes:
    """The live erasure scopes (optionally only of ``user_ids``)."""
    query = select(ErasureRequest.id, ErasureRequest.user_id, ErasureRequest.scope).where(
        ErasureRequest.status.in_(sorted(EXCLUDING_ERASURE_STATUSES))
    )
    if user_ids is not None:
        query = query.where(ErasureRequest.user_id.in_(list(user_ids)))
    return _scopes(session, query)


def request_scopes(session: Session, request_ids: Sequence[str]) -> ExcludedScopes:
    """The scopes of the given requests, whatever their status (redacted ones have none left)."""
    query = select(ErasureRequest.id, ErasureRequest.user_id, ErasureRequest.scope).where(
        ErasureRequest.id.in_(list(request_ids))
    )
    return _scopes(session, query)


def _scopes(session: Session, query: Any) -> ExcludedScopes:
    """The scopes of the requests that ``query`` selects as (id, user_id, scope) rows."""
    users: set[str] = set()
    partial: dict[str, str] = {}
    for request_id, user_id, scope in session.execute(query):
        if user_id is None:  # redacted: only completed requests, which EXCLUDING_ERASURE_STATUSES leaves out
            continue
        if scope == "user":
            users.add(user_id)
        else:
            partial[request_id] = user_id
    items: dict[str, set[str]] = {}
    if partial:
        rows = session.execute(
            select(ErasureScopeItem.request_id, ErasureScopeItem.item_id).where(
                ErasureScopeItem.request_id.in_(list(partial))
            )
        )
        for request_id, item_id in rows:
            items.setdefault(partial[request_id], set()).add(item_id)
    return ExcludedScopes(frozenset(users), items)


CHUNK = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's limits on bound parameters


def _chunks(values: Sequence[str]) -> list[list[str]]:
    return [list(values[start : start + CHUNK]) for start in range(0, len(values), CHUNK)]


def _frame(rows: Sequence[object]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=SAMPLE_FRAME_COLUMNS)
    frame["rating"] = frame["rating"].astype(float)
    frame["timestamp"] = frame["timestamp"].astype("int64")
    frame["label"] = frame["label"].astype("int64")
    return frame


def _sample_columns() -> list[object]:
    return [getattr(Interaction, c) for c in SAMPLE_FRAME_COLUMNS]


def filter_histories(frame: pd.DataFrame, scopes: ExcludedScopes) -> pd.DataFrame:
    """Drop items under a live scope from each row's prompt history."""
    if frame.empty or not scopes.items:
        return frame
    affected = frame["user_id"].isin(list(scopes.items))
    frame.loc[affected, "history"] = [
        encode_history([(i, r) for i, r in decode_history(h) if scopes.allows(u, i)])
        for u, h in zip(frame.loc[affected, "user_id"], frame.loc[affected, "history"], strict=True)
    ]
    return frame


def usable_interactions(
    session: Session,
    user_id: str | None = None,
    splits: Sequence[str] | None = None,
    user_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """THE reader of interaction data for prompts and training: every row not under a live erasure scope,
    with histories cleaned of such items.  Columns ``SAMPLE_FRAME_COLUMNS`` (samples of core.ml.data plus
    the row id), ordered by time.  ``user_id`` / ``user_ids``: only these users' rows."""
    wanted = (
        None
        if user_id is None and user_ids is None
        else sorted({*(user_ids or ()), *([user_id] if user_id is not None else [])})
    )
    query = select(*_sample_columns()).where(_not_excluded())  # type: ignore[call-overload]
    if splits is not None:
        query = query.where(Interaction.split.in_(list(splits)))
    order = (Interaction.timestamp, Interaction.user_id, Interaction.item_id)
    if wanted is None:
        rows = list(session.execute(query.order_by(*order)).all())
    else:
        rows = []
        for chunk in _chunks(wanted):
            rows += session.execute(query.where(Interaction.user_id.in_(chunk)).order_by(*order)).all()
    frame = _frame(rows)
    if wanted is not None and len(wanted) > CHUNK:  # several chunks: restore the global time order
        frame = frame.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
        wanted = None  # all live scopes (a short table) rather than one huge IN (...) list
    return filter_histories(frame, excluded_scopes(session, wanted))


def scope_interactions(
    session: Session, request_ids: Sequence[str], splits: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows under the scope of the given requests, as stored (histories as they were trained on): every
    row of a whole user; of a partial request's user, the rows of the listed items and every other row
    whose prompt history mentions one of them (``ExcludedScopes.covers``)."""
    scopes = request_scopes(session, request_ids)
    users = sorted({*scopes.users, *scopes.items})
    query = select(*_sample_columns())  # type: ignore[call-overload]
    if splits is not None:
        query = query.where(Interaction.split.in_(list(splits)))
    order = (Interaction.timestamp, Interaction.id)
    rows: list[Any] = []
    for chunk in _chunks(users):
        rows += session.execute(query.where(Interaction.user_id.in_(chunk)).order_by(*order)).all()
    frame = _frame(rows)
    if frame.empty:
        return frame
    frame = frame[scopes.covered(frame)]
    return frame.sort_values(["timestamp", "id"], kind="stable").reset_index(drop=True)


def popular_unseen_items(session: Session, user_id: str, limit: int) -> list[str]:
    """The ``limit`` most-rated items (usable ratings only) that the user has no usable rating of."""
    seen = select(Interaction.item_id).where(Interaction.user_id == user_id, _not_excluded())  # type: ignore[arg-type]
    count = func.count(Interaction.id)
    query = (
        select(Interaction.item_id, count)
        .where(_not_excluded(), Interaction.item_id.not_in(seen))  # type: ignore[arg-type]
        .group_by(Interaction.item_id)
        .order_by(count.desc(), Interaction.item_id)
        .limit(limit)
    )
    return [str(row[0]) for row in session.execute(query)]


def has_any_interactions(session: Session) -> bool:
    return session.execute(select(Interaction.id).limit(1)).first() is not None


def user_known(session: Session, user_id: str) -> bool:
    """Whether the user has any stored rating or profile (erased or not)."""
    rated = session.execute(select(Interaction.id).where(Interaction.user_id == user_id).limit(1)).first()
    return rated is not None or session.get(UserProfile, user_id) is not None


def user_item_ids(session: Session, user_id: str) -> set[str]:
    """Every item the user has a stored rating of (usable or not)."""
    return set(session.scalars(select(Interaction.item_id).where(Interaction.user_id == user_id)))


def items_exist(session: Session, item_ids: Iterable[str]) -> set[str]:
    """The subset of ``item_ids`` that are in the catalog."""
    wanted = list(set(item_ids))
    return set(session.scalars(select(Item.item_id).where(Item.item_id.in_(wanted)))) if wanted else set()


def titles(session: Session) -> dict[str, str]:
    return {str(i): str(t) for i, t in session.execute(select(Item.item_id, Item.title))}


def profiles(
    session: Session, user_ids: Iterable[str] | None = None, usable_only: bool = True
) -> dict[str, dict[str, str]]:
    """Profiles keyed by user id; with ``usable_only`` those under a live whole-user scope are left out."""
    query = select(UserProfile)
    if user_ids is not None:
        query = query.where(UserProfile.user_id.in_(list(user_ids)))
    excluded = excluded_scopes(session, user_ids).users if usable_only else frozenset()
    return {
        p.user_id: {"age": p.age, "gender": p.gender, "occupation": p.occupation}
        for p in session.scalars(query)
        if p.user_id not in excluded
    }


def item_ids(session: Session) -> set[str]:
    """Every item id in the catalog."""
    return set(session.scalars(select(Item.item_id)))


def items_by_id(session: Session, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(title, genres) of the given items that are in the catalog."""
    found: dict[str, tuple[str, str]] = {}
    for chunk in _chunks(sorted(set(ids))):
        for item_id, title, genres in session.execute(
            select(Item.item_id, Item.title, Item.genres).where(Item.item_id.in_(chunk))
        ):
            found[str(item_id)] = (str(title), str(genres or ""))
    return found


def insert_rows(
    session: Session, model: type[Item] | type[UserProfile], rows: Sequence[dict[str, str]]
) -> None:
    """Insert catalog rows in bulk: ``Item`` (item_id, title, genres) or ``UserProfile`` (user_id, age,
    gender, occupation)."""
    if rows:
        session.execute(model.__table__.insert(), list(rows))  # type: ignore[attr-defined]
    session.flush()


def update_rows(
    session: Session, model: type[Item] | type[UserProfile], rows: Sequence[dict[str, str]]
) -> None:
    """Update existing catalog rows by primary key (same dicts as ``insert_rows``)."""
    if rows:
        session.execute(update(model), list(rows))
    session.flush()


def rated_pairs(session: Session, user_ids: Iterable[str]) -> set[tuple[str, str]]:
    """Every stored (user, item) rating of the given users (usable or not)."""
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(sorted(set(user_ids))):
        query = select(Interaction.user_id, Interaction.item_id).where(Interaction.user_id.in_(chunk))
        found |= {(str(u), str(i)) for u, i in session.execute(query)}
    return found


def insert_interactions(session: Session, rows: Sequence[Interaction]) -> None:
    """Insert many new interaction rows in bulk (no ORM identity: faster than ``add_interactions``)."""
    columns = ("user_id", "item_id", "rating", "timestamp", "label", "history", "split", "created_at")
    records = [{c: getattr(r, c) for c in columns} for r in rows]
    for start in range(0, len(records), 5000):
        session.execute(Interaction.__table__.insert(), records[start : start + 5000])  # type: ignore[attr-defined]
    session.flush()


def add_interactions(session: Session, rows: Sequence[Interaction]) -> None:
    session.add_all(rows)
    session.flush()


def bulk_import(session: Session, items: pd.DataFrame, users: pd.DataFrame, samples: pd.DataFrame) -> None:
    """Insert a prepared data set (``core.ml.data.PreparedData`` frames) in bulk."""
    session.execute(
        Item.__table__.insert(),  # type: ignore[attr-defined]
        [{"item_id": str(r.item_id), "title": str(r.title), "genres": str(r.genres)} for r in _rows(items)],
    )
    if not users.empty:
        session.execute(
            UserProfile.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "user_id": str(r.user_id),
                    "age": str(r.age),
                    "gender": str(r.gender),
                    "occupation": str(r.occupation),
                }
                for r in _rows(users)
            ],
        )
    records = [
        {
            "user_id": str(r.user_id),
            "item_id": str(r.item_id),
            "rating": float(r.rating),
            "timestamp": int(r.timestamp),
            "label": int(r.label),
            "history": str(r.history),
            "split": str(r.split),
        }
        for r in _rows(samples)
    ]
    for start in range(0, len(records), 5000):
        session.execute(Interaction.__table__.insert(), records[start : start + 5000])  # type: ignore[attr-defined]
    session.flush()


def delete_scope_rows(session: Session, user_id: str, item_ids: Sequence[str] | None) -> int:
    """Delete a user's interactions (all, or of ``item_ids``) and rewrite the histories of the user's
    remaining rows without those items.  Returns the number of rows deleted."""
    query = delete(Interaction).where(Interaction.user_id == user_id)
    if item_ids is not None:
        query = query.where(Interaction.item_id.in_(list(item_ids)))
    deleted = int(session.execute(query).rowcount)  # type: ignore[attr-defined]
    if item_ids:
        gone = set(item_ids)
        for row_id, history in session.execute(
            select(Interaction.id, Interaction.history).where(Interaction.user_id == user_id)
        ).all():
            kept = encode_history([(i, r) for i, r in decode_history(history) if i not in gone])
            if kept != history:
                session.execute(update(Interaction).where(Interaction.id == row_id).values(history=kept))
    session.flush()
    return deleted


def delete_profile(session: Session, user_id: str) -> bool:
    deleted = session.execute(delete(UserProfile).where(UserProfile.user_id == user_id)).rowcount  # type: ignore[attr-defined]
    session.flush()
    return bool(deleted)


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """A frame's rows as named tuples; typed ``Any`` since each column's type is converted where used."""
    return frame.itertuples()
