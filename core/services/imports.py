"""Importing a user's own catalog and ratings into the registry (``POST /v1/admin/imports`` and
``e2u data import``).

Rules:
- all or nothing: one transaction (the edge rolls it back on any refusal); every refusal names the file,
  the line and the column;
- streamed: the files are read a row at a time (``core.ml.data.iter_rows``), items and profiles are
  written in chunks of ``CHUNK_ROWS``, ratings go through a temporary staging table
  (``core.db.repositories.staging``) where they are checked in SQL and then written ``USERS_PER_PAGE``
  users at a time.  Memory holds the catalog's item ids, the file's item and profile ids (duplicate
  checks) and one chunk or page: it does not grow with the number of ratings;
- the files may use MovieLens' own headers (``userId,movieId,...``) and ML-1M's ``::`` files; ratings are
  floats in [0, 10] (half stars included); label = rating > ``like_threshold`` (3: 3.5 is liked);
- items: new ones are added, existing ones get the file's title and genres; profiles likewise (optional:
  users without a profile are fine);
- ratings become new interactions exactly like ratings added through the API (split "new": not trained on
  until a retrain; prompt histories from the user's usable earlier ratings);
- a rating of a (user, item) already stored is refused (Conflict), not updated: the stored one may be in
  an adapter's training data, and a silent change would make the registry disagree with what it learned;
- ratings and profiles under an erasure request that is pending, in progress, failed or completed are
  refused (Conflict): erased data must not come back through an import.  Completed requests keep only
  HMAC(salt, user id), so ``ImportConfig.salt`` must be the certificate salt used at intake;
- the registry must be initialised (adapter v1 registered): before that, ``bootstrap`` imports the
  prepared data only into an empty database, so data imported earlier would leave v1 trained on other
  data.  Bring your own data to a fresh install with ``e2u data prepare --from FOLDER``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import EXCLUDING_ERASURE_STATUSES, ErasureStatus, Item, UserProfile, utcnow
from core.db.repositories import adapters as adapter_repo
from core.db.repositories import audit as audit_repo
from core.db.repositories import catalog as catalog_repo
from core.db.repositories import erasures as erasure_repo
from core.db.repositories import staging as staging_repo
from core.ml.data import (
    ID_RULE,
    CsvInput,
    DataError,
    DuplicateCheck,
    FileKind,
    Row,
    is_valid_id,
    iter_rows,
    parse_item,
    parse_rating,
    parse_user,
    source_name,
)
from core.services.erasures import user_hash
from core.services.errors import Conflict, ImportRefused, InvalidInput
from core.services.recommendations import NewRating, new_interaction_rows

# Erasure statuses whose scope an import may not bring back: the live ones and those whose data is deleted.
REFUSING_STATUSES = EXCLUDING_ERASURE_STATUSES | {ErasureStatus.COMPLETED, ErasureStatus.NOT_UNLEARNED}
MAX_LINES_LISTED = 100  # refused lines named in an error's details
CHUNK_ROWS = 2000  # file rows parsed and written (items, profiles) or staged (ratings) at a time
USERS_PER_PAGE = 100  # users whose staged ratings are checked and written at a time


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


@dataclass
class _Refused:
    """Refused lines of one file and column: the first ``MAX_LINES_LISTED`` and the count."""

    file: str
    column: str
    lines: list[int] = field(default_factory=list)
    rows: int = 0

    def add(self, lines: list[int]) -> None:
        self.lines = sorted(self.lines + lines)[:MAX_LINES_LISTED]
        self.rows += len(lines)


def import_data(
    session: Session,
    ratings: CsvInput,
    items: CsvInput,
    users: CsvInput | None,
    config: ImportConfig,
    actor: str = "cli",
    now: datetime | None = None,
) -> ImportReport:
    """Import a ratings file (user,item,rating,timestamp; unix seconds), an items file (item,title
    [,genres]) and optionally a users file (user[,age,gender,occupation]); each a path or a ``CsvSource``;
    MovieLens' headers and ``.dat`` files too (``core.ml.data.iter_rows``).  Ratings may name items of the
    file or of the catalog.  InvalidInput (422) for a bad file, ImportRefused (409) for erased data or
    ratings already stored, Conflict (409) before the registry is initialised; details carry ``file``,
    ``line``, ``column``.  Streamed in bounded memory (module docstring).  Flushes only; on an error the
    caller rolls back (rows of the files may have been written in its transaction)."""
    when = now or utcnow()
    if not adapter_repo.any_version(session):
        raise Conflict(
            "the registry is not initialised yet: prepare your data with `e2u data prepare --from FOLDER` "
            "(or --ratings ... --items ...) and start the service (adapter v1 is then trained on it)",
        )
    digest = hashlib.sha256()  # of the rows as read: the audit entry's subject, no ids in it
    try:
        catalog = catalog_repo.item_ids(session)
        items_added, items_updated, items_unchanged = _import_items(session, items, catalog, digest)
        erased_profiles: list[_Refused] = []
        profiles_added = profiles_updated = 0
        if users is not None:
            profiles_added, profiles_updated, erased_profiles = _import_profiles(
                session, users, config.salt, digest
            )
        staging_repo.create(session)
        try:
            _stage_ratings(session, ratings, catalog, digest)
            _refuse_duplicates(session, source_name(ratings))
            _refuse_erased(session, source_name(ratings), config.salt, erased_profiles)
            _refuse_stored(session, source_name(ratings))
            ratings_added, users_rated = _write_ratings(session, config, when)
        finally:
            staging_repo.drop(session)
    except DataError as error:
        raise InvalidInput(str(error), file=error.file, line=error.line, column=error.column) from None
    report = ImportReport(
        items_added=items_added,
        items_updated=items_updated,
        items_unchanged=items_unchanged,
        profiles_added=profiles_added,
        profiles_updated=profiles_updated,
        ratings_added=ratings_added,
        users_rated=users_rated,
    )
    # counts and a content hash only: no user ids in the audit log
    content = digest.hexdigest()
    audit_repo.record(session, when, actor, "data.imported", "data_import", content[:16], **vars(report))
    return report


def _chunks(rows: Iterator[Row]) -> Iterator[list[Row]]:
    while chunk := list(islice(rows, CHUNK_ROWS)):
        yield chunk


def _rows(source: CsvInput, kind: FileKind, digest: Any) -> Iterator[Row]:
    """``iter_rows`` with every row fed to ``digest``."""
    for line, row in iter_rows(source, kind):
        digest.update(json.dumps([kind, row], sort_keys=True).encode())
        yield line, row


def _check_ids(source: CsvInput, line: int, record: dict[str, Any], columns: dict[str, str]) -> None:
    """Every id follows the id rule (``core.ml.data.ID_PATTERN``), as the API's do: an id the API refuses
    could never be erased, and one with the history separator would break the prompts."""
    for field_name, column in columns.items():
        if not is_valid_id(str(record[field_name])):  # the value stays out: it may be a person's id
            file = source_name(source)
            where = f"{file}: line {line}, column {column!r}"
            raise InvalidInput(f"{where}: {ID_RULE}", file=file, line=line, column=column)


def _split_upsert(
    records: list[dict[str, str]], stored: dict[str, tuple[str, ...]], key: str, fields: list[str]
) -> tuple[list[dict[str, str]], list[dict[str, str]], int]:
    """Split ``records`` into (to insert, to update, unchanged count) against ``stored`` values."""
    inserts, updates, unchanged = [], [], 0
    for row in records:
        current = stored.get(row[key])
        if current is None:
            inserts.append(row)
        elif tuple(row[f] for f in fields) != current:
            updates.append(row)
        else:
            unchanged += 1
    return inserts, updates, unchanged


def _import_items(session: Session, source: CsvInput, catalog: set[str], digest: Any) -> tuple[int, int, int]:
    """Upsert the items file chunk by chunk; adds its ids to ``catalog``.  (added, updated, unchanged)."""
    duplicates = DuplicateCheck(source, "item", "duplicate item id {}")
    added = updated = unchanged = 0
    for chunk in _chunks(_rows(source, "items", digest)):
        records = []
        for line, row in chunk:
            record = parse_item(source, line, row)
            _check_ids(source, line, record, {"item_id": "item"})
            duplicates.check(record["item_id"], line, repr(record["item_id"]))
            records.append(record)
        stored = catalog_repo.items_by_id(session, [r["item_id"] for r in records])
        new, changed, same = _split_upsert(records, dict(stored), "item_id", ["title", "genres"])
        catalog_repo.insert_rows(session, Item, new)
        catalog_repo.update_rows(session, Item, changed)
        catalog.update(r["item_id"] for r in records)
        added, updated, unchanged = added + len(new), updated + len(changed), unchanged + same
    if not duplicates.first_line:
        raise DataError(f"{source_name(source)}: no items", source_name(source))
    return added, updated, unchanged


def _import_profiles(
    session: Session, source: CsvInput, salt: str, digest: Any
) -> tuple[int, int, list[_Refused]]:
    """Upsert the users file chunk by chunk.  (added, updated, lines of erased users' profiles)."""
    duplicates = DuplicateCheck(source, "user", "duplicate user id {}")
    fields = ["age", "gender", "occupation"]
    refused = _Refused(source_name(source), "user")
    added = updated = 0
    for chunk in _chunks(_rows(source, "users", digest)):
        records, lines = [], []
        for line, row in chunk:
            record = parse_user(source, line, row)
            _check_ids(source, line, record, {"user_id": "user"})
            duplicates.check(record["user_id"], line, repr(record["user_id"]))
            records.append(record)
            lines.append(line)
        whole, _ = _erased_scopes(session, {r["user_id"] for r in records}, salt)
        refused.add([line for r, line in zip(records, lines, strict=True) if r["user_id"] in whole])
        profiles = catalog_repo.profiles(session, [r["user_id"] for r in records], usable_only=False)
        stored = {u: tuple(p[f] for f in fields) for u, p in profiles.items()}
        new, changed, _ = _split_upsert(records, stored, "user_id", fields)
        catalog_repo.insert_rows(session, UserProfile, new)
        catalog_repo.update_rows(session, UserProfile, changed)
        added, updated = added + len(new), updated + len(changed)
    return added, updated, [refused] if refused.rows else []


def _stage_ratings(session: Session, source: CsvInput, catalog: set[str], digest: Any) -> None:
    for chunk in _chunks(_rows(source, "ratings", digest)):
        staged = []
        for line, row in chunk:
            record = parse_rating(source, line, row, catalog)
            _check_ids(source, line, record, {"user_id": "user", "item_id": "item"})
            staged.append({"line": line, **record})
        staging_repo.add(session, staged)
    if not staging_repo.count(session):
        raise DataError(f"{source_name(source)}: no ratings", source_name(source))


def _refuse_duplicates(session: Session, file: str) -> None:
    found = staging_repo.first_duplicate(session)
    if found is not None:
        line, first, item = found
        why = f"item {item!r} rated twice (first on line {first})"
        raise DataError(f"{file}: line {line}, column 'item': {why}", file, line, "item")


def _refusal(message: str, found: list[_Refused]) -> ImportRefused:
    """``found``: the refused lines per file and column; the first is named at the top level."""
    first = found[0]
    listed = [{"file": f.file, "column": f.column, "lines": f.lines, "rows": f.rows} for f in found]
    where = "; ".join(f"{f.file}: {f.rows} row(s), lines {_lines(f)}, column {f.column!r}" for f in found)
    return ImportRefused(
        f"{message}: {where}", file=first.file, line=first.lines[0], column=first.column, refused=listed
    )


def _lines(refused: _Refused) -> str:
    shown = ", ".join(str(n) for n in refused.lines[:10])
    return shown + (f" and {refused.rows - 10} more" if refused.rows > 10 else "")


def _erased_scopes(session: Session, users: set[str], salt: str) -> tuple[set[str], dict[str, set[str]]]:
    """Of ``users``: those under a refusing whole-user erasure, and the items of partial ones per user."""
    subjects = {user_hash(salt, u): u for u in users}
    whole: set[str] = set()
    partial: dict[str, set[str]] = {}
    for subject, scope, scope_items in erasure_repo.scopes_by_user_hash(
        session, list(subjects), REFUSING_STATUSES
    ):
        if scope == "user":
            whole.add(subjects[subject])
        else:
            partial.setdefault(subjects[subject], set()).update(scope_items)
    return whole, partial


def _refuse_erased(session: Session, file: str, salt: str, erased_profiles: list[_Refused]) -> None:
    by_user, by_item = _Refused(file, "user"), _Refused(file, "item")
    for page in staging_repo.user_pages(session, USERS_PER_PAGE):
        whole, partial = _erased_scopes(session, set(page), salt)
        if not whole and not partial:
            continue
        rows = staging_repo.rows_of(session, sorted({*whole, *partial}))
        by_user.add([line for line, u, _, _, _ in rows if u in whole])
        by_item.add([line for line, u, i, _, _ in rows if i in partial.get(u, ())])
    found = [r for r in (by_user, by_item) if r.rows] + erased_profiles
    if found:
        # the user ids stay out of the message: the lines are enough to find them in the caller's files
        raise _refusal("data under an erasure request (pending, in progress or completed) is refused", found)


def _refuse_stored(session: Session, file: str) -> None:
    again = _Refused(file, "item")
    for page in staging_repo.user_pages(session, USERS_PER_PAGE):
        stored = catalog_repo.rated_pairs(session, page)
        if stored:
            rows = staging_repo.rows_of(session, page)
            again.add([line for line, u, i, _, _ in rows if (u, i) in stored])
    if again.rows:
        raise _refusal("ratings of (user, item) pairs already stored are refused (not updated)", [again])


def _write_ratings(session: Session, config: ImportConfig, when: datetime) -> tuple[int, int]:
    """Write the staged ratings as new interactions, a page of users at a time.  (rows, users)."""
    added = users = 0
    for page in staging_repo.user_pages(session, USERS_PER_PAGE):
        past = catalog_repo.usable_interactions(session, user_ids=page)
        past_by_user = dict(iter(past.groupby("user_id", sort=False)))
        new_by_user: dict[str, list[NewRating]] = {}
        for _, user, item, rating, timestamp in staging_repo.rows_of(session, page):
            new_by_user.setdefault(user, []).append(NewRating(item, rating, timestamp))
        rows = []
        for user, new in new_by_user.items():
            history = past_by_user.get(user, past.iloc[0:0])
            rows += new_interaction_rows(user, new, history, config.history_len, config.like_threshold, when)
        catalog_repo.insert_interactions(session, rows)
        added, users = added + len(rows), users + len(new_by_user)
    return added, users
