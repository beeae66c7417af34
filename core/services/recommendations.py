"""What the recommend and score paths may read, and adding ratings.  Every read goes through
``usable_interactions``, so data under a live erasure scope never reaches a prompt."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy.orm import Session

from core.db.models import utcnow
from core.db.repositories import catalog as catalog_repo
from core.db.repositories.catalog import StoredRating
from core.ml.data import decode_history, encode_history
from core.ml.prompts import Catalog
from core.services.errors import Conflict, InvalidInput, NotFound


def user_history(session: Session, user_id: str, history_len: int) -> list[tuple[str, float]]:
    """The user's ``history_len`` most recent usable ratings as (item id, rating), oldest first.
    NotFound when the user has no usable rating and no usable profile."""
    rows = catalog_repo.usable_interactions(session, user_id=user_id)
    if rows.empty and not catalog_repo.profiles(session, [user_id]):
        raise NotFound(f"unknown user {user_id!r} (or all of their data is being erased)")
    rows = rows.sort_values(["timestamp", "item_id"], kind="stable")
    return [(str(i), float(r)) for i, r in zip(rows["item_id"], rows["rating"], strict=True)][-history_len:]


def candidate_items(session: Session, user_id: str, limit: int) -> list[str]:
    """The ``limit`` most popular items (by usable ratings) the user has not rated."""
    if limit < 1:
        raise InvalidInput(f"limit must be >= 1, got {limit}")
    return catalog_repo.popular_unseen_items(session, user_id, limit)


def unknown_items(session: Session, item_ids: Iterable[str]) -> list[str]:
    """The ids among ``item_ids`` that are not in the catalog (validate candidates / score pairs)."""
    wanted = set(item_ids)
    return sorted(wanted - catalog_repo.items_exist(session, wanted))


def prompt_catalog(
    session: Session,
    user_ids: Iterable[str] | None = None,
    item_ids: Iterable[str] | None = None,
    histories: Iterable[str] = (),
) -> Catalog:
    """What prompts need: the usable profiles of ``user_ids`` (all users if None) and the titles of
    ``item_ids`` plus the items of ``histories`` (encoded as ``core.ml.data.encode_history``).  A request
    names its items so that it reads their titles only, whatever the catalogue's size; ``item_ids`` None
    reads every title (offline work over the whole data set)."""
    if item_ids is not None:
        item_ids = {*item_ids, *(item for text in histories for item, _ in decode_history(text))}
    return Catalog(
        titles=catalog_repo.titles(session, item_ids), profiles=catalog_repo.profiles(session, user_ids)
    )


@dataclass(frozen=True)
class NewRating:
    item_id: str
    rating: float  # stars, 0-10 (MovieLens: 1-5)
    timestamp: int | None = None  # unix seconds; None: now


def add_interactions(
    session: Session,
    user_id: str,
    ratings: Sequence[NewRating],
    history_len: int,
    like_threshold: float = 3.0,
    now: datetime | None = None,
) -> list[StoredRating]:
    """Store new ratings (split "new", never trained on until a retrain) with prompt histories built from
    the user's usable ratings.  InvalidInput for unknown items, bad ratings or an item rated twice;
    Conflict while the user (or that item) is under a live erasure.  Nothing is stored on error."""
    if not user_id or not ratings:
        raise InvalidInput("user_id and at least one rating are required")
    when = now or utcnow()
    ids = [r.item_id for r in ratings]
    missing = unknown_items(session, ids)
    if missing:
        raise InvalidInput(f"unknown item(s) {missing}", items=missing)
    if len(set(ids)) != len(ids):
        raise InvalidInput("an item appears twice in one call")
    bad = [r.rating for r in ratings if not 0 <= r.rating <= 10]
    if bad:
        raise InvalidInput(f"ratings must be in [0, 10]; got {bad}")
    scopes = catalog_repo.excluded_scopes(session, [user_id])
    blocked = [i for i in ids if not scopes.allows(user_id, i)]
    if blocked:
        raise Conflict(f"user {user_id!r} has a pending erasure covering item(s) {blocked}", items=blocked)
    already = sorted(set(ids) & catalog_repo.user_item_ids(session, user_id))
    if already:
        raise Conflict(f"user {user_id!r} already rated item(s) {already}", items=already)
    past = catalog_repo.usable_interactions(session, user_id=user_id)
    rows = new_interaction_rows(user_id, ratings, past, history_len, like_threshold, when)
    catalog_repo.insert_interactions(session, rows)
    return rows


def new_interaction_rows(
    user_id: str,
    ratings: Sequence[NewRating],
    past: pd.DataFrame,
    history_len: int,
    like_threshold: float,
    when: datetime,
) -> list[StoredRating]:
    """Interaction rows to store (split "new", label = rating > ``like_threshold``) for one user's new
    ``ratings``, each with the prompt history of its sample: the ``history_len`` latest ratings at or
    before its time among ``past`` (the user's usable rows) and the new ratings before it.  No checks."""
    known = sorted(
        (int(t), str(i), float(r))
        for t, i, r in zip(past["timestamp"], past["item_id"], past["rating"], strict=True)
    )
    now_stamp = int(when.timestamp())
    rows = []
    for r in sorted(ratings, key=lambda x: (now_stamp if x.timestamp is None else x.timestamp, x.item_id)):
        stamp = r.timestamp if r.timestamp is not None else now_stamp
        earlier = known[: bisect.bisect_right(known, stamp, key=lambda k: k[0])]
        history = encode_history([(i, rating) for _, i, rating in earlier[-history_len:]])
        rows.append(
            StoredRating(
                user_id=user_id,
                item_id=r.item_id,
                rating=float(r.rating),
                timestamp=stamp,
                label=int(r.rating > like_threshold),
                history=history,
                split="new",
                created_at=when,
            )
        )
        bisect.insort(known, (stamp, r.item_id, float(r.rating)))
    return rows
