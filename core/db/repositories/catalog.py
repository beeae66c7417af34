"""Items, user profiles and interactions, and the one rule every reader of them follows: data under a live
erasure scope is never returned (``usable_interactions``).

Ratings and profiles are stored sealed under each user's data key (``core.data_keys``): this module seals
on every write and opens on every read, with the ``Keyring`` that the session carries
(``session.info["keyring"]``, set by ``core.db.engine.session_factory``).  Deleting a user's data key
(``delete_scope_rows`` for a whole user) leaves every other copy of their rows unreadable; an item-scope
deletion re-seals the user's remaining rows under a new key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import BindParameter, ColumnElement, Select, delete, exists, func, or_, select, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from core.data_keys import DataKey, DataKeyError, Keyring, SealedProfile, SealedRating, Wrapped
from core.db.engine import KEYRING_INFO, is_sqlite
from core.db.models import (
    EXCLUDING_ERASURE_STATUSES,
    ErasureRequest,
    ErasureScopeItem,
    Interaction,
    Item,
    ItemPopularity,
    UserDataKey,
    UserProfile,
    utcnow,
)
from core.ml.data import decode_history, encode_history

SAMPLE_FRAME_COLUMNS = ["id", "user_id", "item_id", "rating", "timestamp", "label", "history", "split"]


def not_excluded(user_id: Any = Interaction.user_id, item_id: Any = Interaction.item_id) -> Any:
    """The (``user_id``, ``item_id``) columns of the enclosing query's row lie in no live erasure scope
    (whole user, or a listed item of that user)."""
    request = aliased(ErasureRequest)
    listed = (
        exists()
        .where(ErasureScopeItem.request_id == request.id, ErasureScopeItem.item_id == item_id)
        .correlate_except(ErasureScopeItem)
    )
    return ~exists().where(
        request.user_id == user_id,
        request.status.in_(sorted(EXCLUDING_ERASURE_STATUSES)),
        or_(request.scope == "user", listed),
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


# ---------------------------------------------------------------------------------------------- data keys


def keyring(session: Session) -> Keyring:
    """The keyring the session carries; DataKeyError when it has none (fail closed: nothing is read or
    written in clear)."""
    found = session.info.get(KEYRING_INFO)
    if not isinstance(found, Keyring):
        raise DataKeyError(
            "this session carries no keyring: make it with core.db.engine.session_factory(..., keyring=)"
        )
    return found


def data_keys(session: Session, user_ids: Iterable[str] | None = None) -> dict[str, DataKey]:
    """The unwrapped data keys of ``user_ids`` (every user's if None); users without one are absent."""
    ring = keyring(session)
    columns = (UserDataKey.user_id, UserDataKey.kek_id, UserDataKey.wrapped_key)
    rows: list[Any] = []
    if user_ids is None:
        rows = list(session.execute(select(*columns)))
    else:
        for chunk in _chunks(sorted(set(user_ids))):
            rows += session.execute(select(*columns).where(UserDataKey.user_id.in_(chunk))).all()
    return {str(u): ring.unwrap(str(u), Wrapped(str(k), bytes(w))) for u, k, w in rows}


def _key_row(ring: Keyring, user_id: str, key: DataKey, now: datetime) -> dict[str, Any]:
    wrapped = ring.wrap(user_id, key)
    return {"user_id": user_id, "kek_id": wrapped.kek_id, "wrapped_key": wrapped.blob, "created_at": now}


def _ensure_data_keys(session: Session, user_ids: Iterable[str]) -> dict[str, DataKey]:
    """The data keys of ``user_ids``, created for those without one.  A concurrent writer that creates
    the same user's key first wins (insert ... on conflict do nothing) and its key is the one returned."""
    wanted = sorted(set(user_ids))
    found = data_keys(session, wanted)
    missing = [u for u in wanted if u not in found]
    if missing:
        ring, now = keyring(session), utcnow()
        dialect_insert = sqlite.insert if is_sqlite(session) else postgresql.insert
        for chunk in _chunks(missing):
            rows = [_key_row(ring, u, DataKey.generate(), now) for u in chunk]
            session.execute(dialect_insert(UserDataKey).values(rows).on_conflict_do_nothing())
        found |= data_keys(session, missing)
    return found


def rewrap_data_keys(session: Session, limit: int = 5000) -> int:
    """Rewrap up to ``limit`` data keys that are not under the active KEK (a KEK rotation's sweep).
    Returns how many were rewrapped (0: none is left under another KEK)."""
    ring = keyring(session)
    active = ring.active_kek_id
    rows = session.execute(
        select(UserDataKey.user_id, UserDataKey.kek_id, UserDataKey.wrapped_key)
        .where(UserDataKey.kek_id != active)
        .limit(limit)
    ).all()
    for user_id, kid, blob in rows:
        key = ring.unwrap(str(user_id), Wrapped(str(kid), bytes(blob)))
        wrapped = ring.wrap(str(user_id), key)
        session.execute(
            update(UserDataKey)
            .where(UserDataKey.user_id == user_id)
            .values(kek_id=wrapped.kek_id, wrapped_key=wrapped.blob)
        )
    session.flush()
    return len(rows)


def data_keys_by_kek(session: Session) -> dict[str, int]:
    """How many data keys each KEK wraps."""
    query = select(UserDataKey.kek_id, func.count()).group_by(UserDataKey.kek_id)
    return {str(k): int(n) for k, n in session.execute(query)}


# ---------------------------------------------------------------------------------------------- sealed rows


@dataclass(frozen=True)
class StoredRating:
    """One rating to store (or as stored), in clear: what ``insert_interactions`` seals."""

    user_id: str
    item_id: str
    rating: float
    timestamp: int
    label: int
    history: str
    split: str
    created_at: datetime


def _sealed_record(key: DataKey, row: StoredRating) -> dict[str, Any]:
    sealed = SealedRating(float(row.rating), int(row.timestamp), int(row.label), str(row.history))
    return {
        "user_id": row.user_id,
        "item_id": row.item_id,
        "sealed": sealed.seal(key, row.user_id, row.item_id),
        "split": row.split,
        "created_at": row.created_at,
    }


# a stored row with its user's wrapped data key (one query: no second round trip for the keys)
_STORED_COLUMNS = (
    Interaction.id,
    Interaction.user_id,
    Interaction.item_id,
    Interaction.split,
    Interaction.sealed,
    UserDataKey.kek_id,
    UserDataKey.wrapped_key,
)


def _stored_rows() -> Any:
    """SELECT of ``_STORED_COLUMNS``: interactions joined to their users' data keys."""
    return select(*_STORED_COLUMNS).outerjoin(UserDataKey, UserDataKey.user_id == Interaction.user_id)


class _KeyCache:
    """The data keys met while reading one result, unwrapped once per user."""

    def __init__(self, session: Session):
        self.ring, self.keys = keyring(session), dict[str, DataKey]()

    def get(self, user_id: str, kek_id: str | None, wrapped: bytes | None) -> DataKey:
        key = self.keys.get(user_id)
        if key is None:
            if kek_id is None or wrapped is None:  # deleted keys go with their rows, in one transaction
                raise DataKeyError("a stored row has no data key (destroyed): it cannot be read")
            key = self.keys[user_id] = self.ring.unwrap(user_id, Wrapped(kek_id, bytes(wrapped)))
        return key


def _frame(session: Session, rows: Sequence[Any]) -> pd.DataFrame:
    """A sample frame (``SAMPLE_FRAME_COLUMNS``) from ``_STORED_COLUMNS`` rows."""
    keys = _KeyCache(session)
    records = []
    for row_id, user_id, item_id, split, blob, kek_id, wrapped in rows:
        key = keys.get(user_id, kek_id, wrapped)
        opened = SealedRating.open(key, user_id, item_id, bytes(blob))
        records.append(
            (row_id, user_id, item_id, opened.rating, opened.timestamp, opened.label, opened.history, split)
        )
    frame = pd.DataFrame(records, columns=SAMPLE_FRAME_COLUMNS)
    frame["rating"] = frame["rating"].astype(float)
    frame["timestamp"] = frame["timestamp"].astype("int64")
    frame["label"] = frame["label"].astype("int64")
    return frame


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
    query = _stored_rows().where(not_excluded())
    if splits is not None:
        query = query.where(Interaction.split.in_(list(splits)))
    if wanted is None:
        rows = list(session.execute(query).all())
    else:
        rows = []
        for chunk in _chunks(wanted):
            rows += session.execute(query.where(Interaction.user_id.in_(chunk))).all()
    # the time is sealed: ordered here, not in SQL
    frame = _frame(session, rows).sort_values(["timestamp", "user_id", "item_id"], kind="stable")
    frame = frame.reset_index(drop=True)
    if wanted is not None and len(wanted) > CHUNK:
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
    query = _stored_rows()
    if splits is not None:
        query = query.where(Interaction.split.in_(list(splits)))
    rows: list[Any] = []
    for chunk in _chunks(users):
        rows += session.execute(query.where(Interaction.user_id.in_(chunk))).all()
    frame = _frame(session, rows)
    if frame.empty:
        return frame
    frame = frame[scopes.covered(frame)]
    return frame.sort_values(["timestamp", "id"], kind="stable").reset_index(drop=True)


def popular_unseen_items(session: Session, user_id: str, limit: int) -> list[str]:
    """The ``limit`` most-rated items (usable ratings only; ties by item id) that the user has no usable
    rating of.

    Reads the head of the maintained ranking (``item_popularity``: stored ratings per item, kept by
    triggers) instead of counting every rating: the cost follows ``limit``, the user's ratings and the
    rows under live erasures, not the catalogue.  Those rows are subtracted here; since that only lowers
    a count, an item beyond the rows read ranks below the last one read, so the head is read (doubling)
    until ``limit`` items rank at or above that last row."""
    seen = set(
        session.scalars(select(Interaction.item_id).where(Interaction.user_id == user_id, not_excluded()))  # type: ignore[arg-type]
    )
    excluded = _excluded_counts(session)
    ranking = popularity_ranking()
    fetch = limit + len(seen) + len(excluded)
    while True:
        rows = session.execute(ranking.limit(fetch)).all()
        usable = sorted((-(int(n) - excluded.get(str(i), 0)), str(i)) for i, n in rows if str(i) not in seen)
        ranked = [key for key in usable if key[0] < 0]  # at least one usable rating
        if len(rows) < fetch:  # the whole ranking was read
            return [item for _, item in ranked[:limit]]
        boundary = (-int(rows[-1][1]), str(rows[-1][0]))
        settled = [item for count, item in ranked if (count, item) <= boundary]
        if len(settled) >= limit:
            return settled[:limit]
        fetch *= 2


def popularity_ranking() -> Select[str, int]:
    """(item id, stored ratings) of the items with any, most rated first, ties by id: the head of the
    index ``ix_item_popularity_rank`` read backwards."""
    return (
        select(ItemPopularity.item_id, ItemPopularity.ratings)
        .where(ItemPopularity.ratings > 0)
        .order_by(ItemPopularity.ratings.desc(), ItemPopularity.item_id)
    )


def _excluded_counts(session: Session) -> dict[str, int]:
    """Per item, how many stored ratings lie under a live erasure scope (the open requests' rows)."""
    scopes = excluded_scopes(session)
    counts: dict[str, int] = {}
    for chunk in _chunks(sorted(scopes.users)):
        query = (
            select(Interaction.item_id, func.count())
            .where(Interaction.user_id.in_(chunk))
            .group_by(Interaction.item_id)
        )
        for item_id, n in session.execute(query):
            counts[str(item_id)] = counts.get(str(item_id), 0) + int(n)
    partial = {u: items for u, items in scopes.items.items() if u not in scopes.users}
    for user, item in rated_pairs(session, partial):
        if item in partial[user]:
            counts[item] = counts.get(item, 0) + 1
    return counts


def has_any_interactions(session: Session) -> bool:
    return session.execute(select(Interaction.id).limit(1)).first() is not None


def user_known_clause(user_id: str | BindParameter[str]) -> ColumnElement[bool]:
    """SQL truth of ``user_known``, to fold into another statement (intake checks it in its insert)."""
    return or_(exists().where(Interaction.user_id == user_id), exists().where(UserProfile.user_id == user_id))


def user_known(session: Session, user_id: str) -> bool:
    """Whether the user has any stored rating or profile (erased or not)."""
    return bool(session.scalar(select(user_known_clause(user_id))))


def stored_user_ids(session: Session) -> set[str]:
    """Every user id with a stored rating, profile or data key."""
    query = union(select(Interaction.user_id), select(UserProfile.user_id), select(UserDataKey.user_id))
    return {str(u) for u in session.scalars(query)}


def user_item_ids(session: Session, user_id: str) -> set[str]:
    """Every item the user has a stored rating of (usable or not)."""
    return set(session.scalars(select(Interaction.item_id).where(Interaction.user_id == user_id)))


def items_exist(session: Session, item_ids: Iterable[str]) -> set[str]:
    """The subset of ``item_ids`` that are in the catalog."""
    wanted = list(set(item_ids))
    return set(session.scalars(select(Item.item_id).where(Item.item_id.in_(wanted)))) if wanted else set()


def titles(session: Session, item_ids: Iterable[str] | None = None) -> dict[str, str]:
    """Titles of ``item_ids`` that are in the catalog (every item's if None: a whole-catalogue read)."""
    query = select(Item.item_id, Item.title)
    if item_ids is None:
        return {str(i): str(t) for i, t in session.execute(query)}
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(item_ids))):
        found |= {str(i): str(t) for i, t in session.execute(query.where(Item.item_id.in_(chunk)))}
    return found


def profiles(
    session: Session, user_ids: Iterable[str] | None = None, usable_only: bool = True
) -> dict[str, dict[str, str]]:
    """Profiles keyed by user id; with ``usable_only`` those under a live whole-user scope are left out."""
    wanted = None if user_ids is None else list(user_ids)
    query = select(
        UserProfile.user_id, UserProfile.sealed, UserDataKey.kek_id, UserDataKey.wrapped_key
    ).outerjoin(UserDataKey, UserDataKey.user_id == UserProfile.user_id)
    if wanted is not None:
        query = query.where(UserProfile.user_id.in_(wanted))
    excluded = excluded_scopes(session, wanted).users if usable_only else frozenset()
    keys = _KeyCache(session)
    found = {}
    for user_id, blob, kek_id, wrapped in session.execute(query):
        if user_id not in excluded:
            opened = SealedProfile.open(keys.get(user_id, kek_id, wrapped), user_id, bytes(blob))
            found[user_id] = {"age": opened.age, "gender": opened.gender, "occupation": opened.occupation}
    return found


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


def _sealed_profiles(session: Session, rows: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    keys = _ensure_data_keys(session, [r["user_id"] for r in rows])
    return [
        {
            "user_id": r["user_id"],
            "sealed": SealedProfile(r["age"], r["gender"], r["occupation"]).seal(
                keys[r["user_id"]], r["user_id"]
            ),
        }
        for r in rows
    ]


def insert_rows(
    session: Session, model: type[Item] | type[UserProfile], rows: Sequence[dict[str, str]]
) -> None:
    """Insert catalog rows in bulk: ``Item`` (item_id, title, genres) or ``UserProfile`` (user_id, age,
    gender, occupation; sealed here)."""
    if rows:
        records = _sealed_profiles(session, rows) if model is UserProfile else list(rows)
        session.execute(model.__table__.insert(), records)  # type: ignore[attr-defined]
    session.flush()


def update_rows(
    session: Session, model: type[Item] | type[UserProfile], rows: Sequence[dict[str, str]]
) -> None:
    """Update existing catalog rows by primary key (same dicts as ``insert_rows``)."""
    if rows:
        records = _sealed_profiles(session, rows) if model is UserProfile else list(rows)
        session.execute(update(model), records)
    session.flush()


def rated_pairs(session: Session, user_ids: Iterable[str]) -> set[tuple[str, str]]:
    """Every stored (user, item) rating of the given users (usable or not)."""
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(sorted(set(user_ids))):
        query = select(Interaction.user_id, Interaction.item_id).where(Interaction.user_id.in_(chunk))
        found |= {(str(u), str(i)) for u, i in session.execute(query)}
    return found


def insert_interactions(session: Session, rows: Sequence[StoredRating]) -> None:
    """Seal and insert many new interaction rows in bulk (each user's data key made if it has none)."""
    keys = _ensure_data_keys(session, [r.user_id for r in rows])
    records = [_sealed_record(keys[r.user_id], r) for r in rows]
    for start in range(0, len(records), 5000):
        session.execute(Interaction.__table__.insert(), records[start : start + 5000])  # type: ignore[attr-defined]
    session.flush()


def bulk_import(session: Session, items: pd.DataFrame, users: pd.DataFrame, samples: pd.DataFrame) -> None:
    """Insert a prepared data set (``core.ml.data.PreparedData`` frames) in bulk, sealed."""
    if not items.empty:
        session.execute(
            Item.__table__.insert(),  # type: ignore[attr-defined]
            [
                {"item_id": str(r.item_id), "title": str(r.title), "genres": str(r.genres)}
                for r in _rows(items)
            ],
        )
    if not users.empty:
        profile_rows = [
            {
                "user_id": str(r.user_id),
                "age": str(r.age),
                "gender": str(r.gender),
                "occupation": str(r.occupation),
            }
            for r in _rows(users)
        ]
        insert_rows(session, UserProfile, profile_rows)
    now = utcnow()
    insert_interactions(
        session,
        [
            StoredRating(
                str(r.user_id),
                str(r.item_id),
                float(r.rating),
                int(r.timestamp),
                int(r.label),
                str(r.history),
                str(r.split),
                now,
            )
            for r in _rows(samples)
        ],
    )


def delete_scope_rows(session: Session, user_id: str, item_ids: Sequence[str] | None) -> int:
    """Delete a user's interactions: all of them and the user's data key (``item_ids`` None: every copy
    of the user's rows and profile anywhere becomes unreadable), or those of ``item_ids``, the user's
    remaining rows (histories rewritten without those items) and profile then re-sealed under a new data
    key.  Returns the number of rows deleted."""
    query = delete(Interaction).where(Interaction.user_id == user_id)
    if item_ids is not None:
        query = query.where(Interaction.item_id.in_(list(item_ids)))
    deleted = int(session.execute(query).rowcount)  # type: ignore[attr-defined]
    if item_ids is None:
        session.execute(delete(UserDataKey).where(UserDataKey.user_id == user_id))
    elif item_ids:
        _reseal_user(session, user_id, set(item_ids))
    session.flush()
    return deleted


def _reseal_user(session: Session, user_id: str, gone: set[str]) -> None:
    """Re-seal the user's rows (histories without ``gone``) and profile under a new data key, which
    replaces the old one: copies of the rows sealed under the old key become unreadable."""
    old = data_keys(session, [user_id]).get(user_id)
    if old is None:
        return
    new = DataKey.generate()
    rows = session.execute(
        select(Interaction.id, Interaction.item_id, Interaction.sealed).where(Interaction.user_id == user_id)
    ).all()
    updates = []
    for row_id, item_id, blob in rows:
        opened = SealedRating.open(old, user_id, item_id, bytes(blob))
        history = encode_history([(i, r) for i, r in decode_history(opened.history) if i not in gone])
        kept = SealedRating(opened.rating, opened.timestamp, opened.label, history)
        updates.append({"id": row_id, "sealed": kept.seal(new, user_id, item_id)})
    if updates:
        session.execute(update(Interaction), updates)
    profile = session.get(UserProfile, user_id)
    if profile is not None:
        opened_profile = SealedProfile.open(old, user_id, bytes(profile.sealed))
        profile.sealed = opened_profile.seal(new, user_id)
    record = _key_row(keyring(session), user_id, new, utcnow())
    session.execute(
        update(UserDataKey)
        .where(UserDataKey.user_id == user_id)
        .values(kek_id=record["kek_id"], wrapped_key=record["wrapped_key"], created_at=record["created_at"])
    )


def delete_profile(session: Session, user_id: str) -> bool:
    deleted = session.execute(delete(UserProfile).where(UserProfile.user_id == user_id)).rowcount  # type: ignore[attr-defined]
    session.flush()
    return bool(deleted)


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """A frame's rows as named tuples; typed ``Any`` since each column's type is converted where used."""
    return frame.itertuples()
