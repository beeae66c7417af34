"""Importing a user's own catalog and ratings into the registry (``POST /v1/admin/imports`` and
``e2u data import``).

Rules:
- all or nothing: the files are parsed and checked (``core.ml.data.read_csv_data``) and then checked
  against the database before the first write; every refusal names the file, the line and the column;
- items: new ones are added, existing ones get the file's title and genres; profiles likewise;
- ratings become new interactions exactly like ratings added through the API (split "new": not trained on
  until a retrain; prompt histories from the user's usable earlier ratings);
- a rating of a (user, item) already stored is refused (Conflict), not updated: the stored one may be in
  an adapter's training data, and a silent change would make the registry disagree with what it learned;
- ratings and profiles under an erasure request that is pending, in progress, failed or completed are
  refused (Conflict): erased data must not come back through an import.  Completed requests keep only
  HMAC(salt, user id), so ``ImportConfig.salt`` must be the certificate salt used at intake;
- the registry must be initialised (adapter v1 registered): before that, ``bootstrap`` imports the
  prepared data only into an empty database, so data imported earlier would leave v1 trained on other
  data.  Bring your own data to a fresh install with ``e2u data prepare --ratings --items``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy.orm import Session

from core.db.models import EXCLUDING_ERASURE_STATUSES, ErasureStatus, Item, UserProfile, utcnow
from core.db.repositories import adapters as adapter_repo
from core.db.repositories import audit as audit_repo
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import erasures as erasure_repo
from core.ml.data import ID_RULE, CsvData, CsvInput, DataError, frame_hash, is_valid_id, read_csv_data
from core.services.erasures import user_hash
from core.services.errors import Conflict, ImportRefused, InvalidInput
from core.services.recommendations import NewRating, new_interaction_rows

# Erasure statuses whose scope an import may not bring back: the live ones and those whose data is deleted.
REFUSING_STATUSES = EXCLUDING_ERASURE_STATUSES | {ErasureStatus.COMPLETED, ErasureStatus.NOT_UNLEARNED}
MAX_LINES_LISTED = 100  # refused lines named in an error's details


@dataclass(frozen=True)
class ImportConfig:
    """``salt``: the certificate salt (E2U_CERTIFICATE_SALT), to recognise users of completed erasures;
    ``history_len``: K, ratings in a prompt history; ``like_threshold``: label = rating > this."""

    salt: str
    history_len: int
    like_threshold: float = 3.0


@dataclass(frozen=True)
class ImportReport:
    items_added: int
    items_updated: int  # title or genres changed
    items_unchanged: int
    profiles_added: int
    profiles_updated: int
    ratings_added: int
    users_rated: int  # distinct users among the ratings


def import_data(
    session: Session,
    ratings: CsvInput,
    items: CsvInput,
    users: CsvInput | None,
    config: ImportConfig,
    actor: str = "cli",
    now: datetime | None = None,
) -> ImportReport:
    """Import a ratings CSV (user,item,rating,timestamp; unix seconds), an items CSV (item,title[,genres])
    and optionally a users CSV (user[,age,gender,occupation]); each a path or a ``CsvSource``.  Ratings may
    name items of the file or of the catalog.  InvalidInput (422) for a bad file, ImportRefused (409) for
    erased data or ratings already stored, Conflict (409) before the registry is initialised; details
    carry ``file``, ``line``, ``column``.  Nothing is written on error.  Flushes only."""
    when = now or utcnow()
    if not adapter_repo.any_version(session):
        raise Conflict(
            "the registry is not initialised yet: prepare your data with `e2u data prepare --ratings ... "
            "--items ...` and start the service (adapter v1 is then trained on it)",
        )
    try:
        data = read_csv_data(ratings, items, users, known_items=catalog_repo.item_ids(session))
    except DataError as error:
        raise InvalidInput(str(error), file=error.file, line=error.line, column=error.column) from None
    _refuse_bad_ids(data)
    _refuse_erased(session, data, config.salt)
    _refuse_stored(session, data)
    return _write(session, data, config, actor, when)


def _refuse_bad_ids(data: CsvData) -> None:
    """Every id of the files follows the id rule (``core.ml.data.ID_PATTERN``), as the API's do: an id the
    API refuses could never be erased, and one with the history separator would break the prompts."""
    dataset = data.dataset
    checks = (
        ("items", dataset.items, {"item_id": "item"}),
        ("interactions", dataset.interactions, {"user_id": "user", "item_id": "item"}),
        ("users", dataset.users, {"user_id": "user"}),
    )
    for origin, frame, columns in checks:
        file, lines = data.origins[origin]
        for field, column in columns.items():
            for value, line in zip(frame[field], lines, strict=True):
                if not is_valid_id(str(value)):  # the value stays out: it may be a person's id
                    where = f"{file}: line {line}, column {column!r}"
                    raise InvalidInput(f"{where}: {ID_RULE}", file=file, line=line, column=column)


def _refusal(message: str, found: list[tuple[str, str, list[int]]]) -> ImportRefused:
    """``found``: (file, column, lines) per file with refused rows; the first is named at the top level."""
    file, column, lines = found[0]
    listed = [{"file": f, "column": c, "lines": ls[:MAX_LINES_LISTED], "rows": len(ls)} for f, c, ls in found]
    where = "; ".join(f"{f}: {len(ls)} row(s), lines {_lines(ls)}, column {c!r}" for f, c, ls in found)
    return ImportRefused(f"{message}: {where}", file=file, line=lines[0], column=column, refused=listed)


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:10])
    return shown + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")


def _refuse_erased(session: Session, data: CsvData, salt: str) -> None:
    ratings, profiles = data.dataset.interactions, data.dataset.users
    subjects = {user_hash(salt, u): u for u in {*ratings["user_id"], *profiles["user_id"]}}
    whole: set[str] = set()
    partial: dict[str, set[str]] = {}
    for subject, scope, scope_items in erasure_repo.scopes_by_user_hash(
        session, list(subjects), REFUSING_STATUSES
    ):
        if scope == "user":
            whole.add(subjects[subject])
        else:
            partial.setdefault(subjects[subject], set()).update(scope_items)
    if not whole and not partial:
        return
    found: list[tuple[str, str, list[int]]] = []
    rating_file, rating_lines = data.origins["interactions"]
    by_user = [line for u, line in zip(ratings["user_id"], rating_lines, strict=True) if u in whole]
    by_item = [
        line
        for u, i, line in zip(ratings["user_id"], ratings["item_id"], rating_lines, strict=True)
        if i in partial.get(u, ())
    ]
    if by_user:
        found.append((rating_file, "user", by_user))
    if by_item:
        found.append((rating_file, "item", by_item))
    user_file, user_lines = data.origins["users"]
    profile_lines = [line for u, line in zip(profiles["user_id"], user_lines, strict=True) if u in whole]
    if profile_lines:
        found.append((user_file, "user", profile_lines))
    if found:
        # the user ids stay out of the message: the lines are enough to find them in the caller's files
        raise _refusal("data under an erasure request (pending, in progress or completed) is refused", found)


def _refuse_stored(session: Session, data: CsvData) -> None:
    ratings = data.dataset.interactions
    stored = catalog_repo.rated_pairs(session, set(ratings["user_id"]))
    if not stored:
        return
    file, lines = data.origins["interactions"]
    again = [
        line
        for u, i, line in zip(ratings["user_id"], ratings["item_id"], lines, strict=True)
        if (u, i) in stored
    ]
    if again:
        raise _refusal(
            "ratings of (user, item) pairs already stored are refused (not updated)", [(file, "item", again)]
        )


def _upsert(
    new: pd.DataFrame, stored: dict[str, tuple[str, ...]], key: str, fields: list[str]
) -> tuple[list[dict[str, str]], list[dict[str, str]], int]:
    """Split ``new``'s rows into (to insert, to update, unchanged count) against ``stored`` values."""
    inserts, updates, unchanged = [], [], 0
    for record in new[[key, *fields]].astype(str).to_dict("records"):
        row = {str(k): str(v) for k, v in record.items()}
        current = stored.get(row[key])
        if current is None:
            inserts.append(row)
        elif tuple(row[f] for f in fields) != current:
            updates.append(row)
        else:
            unchanged += 1
    return inserts, updates, unchanged


def _write(session: Session, data: CsvData, config: ImportConfig, actor: str, when: datetime) -> ImportReport:
    dataset = data.dataset
    item_fields = ["title", "genres"]
    new_items, changed_items, same_items = _upsert(
        dataset.items,
        dict(catalog_repo.items_by_id(session, dataset.items["item_id"])),
        "item_id",
        item_fields,
    )
    catalog_repo.insert_rows(session, Item, new_items)
    catalog_repo.update_rows(session, Item, changed_items)

    profile_fields = ["age", "gender", "occupation"]
    stored_profiles = {
        u: tuple(p[f] for f in profile_fields)
        for u, p in catalog_repo.profiles(session, list(dataset.users["user_id"]), usable_only=False).items()
    }
    new_profiles, changed_profiles, _ = _upsert(dataset.users, stored_profiles, "user_id", profile_fields)
    catalog_repo.insert_rows(session, UserProfile, new_profiles)
    catalog_repo.update_rows(session, UserProfile, changed_profiles)

    ratings = dataset.interactions
    users = sorted(set(ratings["user_id"]))
    past = catalog_repo.usable_interactions(session, user_ids=users)
    past_by_user = dict(iter(past.groupby("user_id", sort=False)))
    rows = []
    for user, group in ratings.groupby("user_id", sort=True):
        new = [
            NewRating(str(i), float(r), int(t))
            for i, r, t in zip(group["item_id"], group["rating"], group["timestamp"], strict=True)
        ]
        history = past_by_user.get(user, past.iloc[0:0])
        rows += new_interaction_rows(str(user), new, history, config.history_len, config.like_threshold, when)
    catalog_repo.insert_interactions(session, rows)

    report = ImportReport(
        items_added=len(new_items),
        items_updated=len(changed_items),
        items_unchanged=same_items,
        profiles_added=len(new_profiles),
        profiles_updated=len(changed_profiles),
        ratings_added=len(rows),
        users_rated=len(users),
    )
    # counts and a content hash only: no user ids in the audit log
    content = frame_hash(dataset.interactions, dataset.items, dataset.users)
    audit_repo.record(session, when, actor, "data.imported", "data_import", content[:16], **vars(report))
    return report
