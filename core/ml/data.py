"""Interaction data: loading MovieLens-100K or a user's own CSVs, building the paper's samples,
the chronological split, and forget/retain selection.

A *sample* is (user profile, the user's K most recent earlier-rated items with their ratings, target
item) with label = 1 if the target's rating > 3 else 0.  Everything here is plain pandas; no database.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import importlib.util
import io
import itertools
import json
import re
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pandas as pd

# One rule for user and item ids at every entry point (API bodies and paths, CSV imports, erasure requests):
# 1 to 64 characters (the columns' width) of letters, digits and "._@+-"; so no id holds a separator of the
# history encoding ("|" between entries, ":" before the rating), a comma, a space or a control character.
ID_MAX_LENGTH = 64
ID_PATTERN = r"^[A-Za-z0-9._@+-]{1,64}$"
ID_RULE = 'an id is 1 to 64 letters, digits or "._@+-"'


def is_valid_id(value: str) -> bool:
    return re.fullmatch(ID_PATTERN, value) is not None


INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
SAMPLE_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "label", "history", "split"]
SPLITS = ("train", "valid", "test", "holdout")  # holdout: users held out of training entirely


class DataError(ValueError):
    """Input data that does not fit; the message names the file, line and column where known, and so do
    the attributes ``file``, ``line`` (1-based, header = 1) and ``column`` (None where not known)."""

    def __init__(
        self, message: str, file: str | None = None, line: int | None = None, column: str | None = None
    ) -> None:
        super().__init__(message)
        self.file, self.line, self.column = file, line, column


@dataclass(frozen=True)
class Dataset:
    """A catalog plus ratings.  ``users`` may be empty (profiles are optional)."""

    interactions: pd.DataFrame  # user_id:str, item_id:str, rating:float, timestamp:int
    items: pd.DataFrame  # item_id:str, title:str, genres:str
    users: pd.DataFrame  # user_id:str, age:str, gender:str, occupation:str


@dataclass(frozen=True)
class SampleConfig:
    """How samples are built and split.  ``history_len`` is K; valid/test fractions are of interactions.

    ``holdout_user_fraction``: the fraction of users held out of training entirely (``holdout_users``):
    all their samples get split "holdout", never trained on by any adapter version, and calibrate the
    verifier's memorisation test (``core.ml.evidence.reference_null``).  The chronological train / valid /
    test boundaries are computed over the other users.
    """

    history_len: int = 5
    # 0: a user's first rating is a sample too (with an empty history), so every rating is kept and
    # every rating can be named in an erasure request
    min_history: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    like_threshold: float = 3.0
    holdout_user_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.history_len < 1:
            raise ValueError(f"history_len must be >= 1, got {self.history_len}")
        if not 0 <= self.min_history <= self.history_len:
            raise ValueError(f"min_history must be in [0, history_len], got {self.min_history}")
        if not (0 < self.valid_fraction < 1 and 0 < self.test_fraction < 1):
            raise ValueError("valid_fraction and test_fraction must be in (0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must be < 1")
        if not 0 <= self.holdout_user_fraction < 1:
            raise ValueError(f"holdout_user_fraction must be in [0, 1), got {self.holdout_user_fraction}")

    def hashed_fields(self) -> dict[str, object]:
        """The fields that enter a content hash: ``holdout_user_fraction`` only when > 0, so that data
        prepared before the field existed (fraction 0) keeps its hash."""
        values: dict[str, object] = asdict(self)
        if not self.holdout_user_fraction:
            del values["holdout_user_fraction"]
        return values


@dataclass
class PreparedData:
    """Samples of all splits (one frame, column ``split``) plus the catalog needed to render prompts."""

    samples: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    config: SampleConfig = field(default_factory=SampleConfig)

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.samples[self.samples["split"] == name].reset_index(drop=True)

    def content_hash(self) -> str:
        return frame_hash(self.samples, self.items, self.users, extra=json.dumps(self.config.hashed_fields()))


# ---------------------------------------------------------------------------------------------- loading


def movielens_dir() -> Path:
    """The ml-100k folder inside the installed ``recbole`` wheel (installed with --no-deps at set-up)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise DataError("MovieLens-100K not found: install it with `pip install --no-deps recbole==1.2.1`")
    path = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise DataError(f"MovieLens-100K files missing under {path}")
    return path


def _read_atomic(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]  # drop RecBole's ':type' suffixes
    return frame


def load_movielens(path: Path | None = None) -> Dataset:
    """Load MovieLens-100K (943 users, 1,682 items, 100,000 ratings) from RecBole's atomic files."""
    root = path or movielens_dir()
    inter = _read_atomic(root / "ml-100k.inter")
    interactions = pd.DataFrame(
        {
            "user_id": inter["user_id"],
            "item_id": inter["item_id"],
            "rating": inter["rating"].astype(float),
            "timestamp": inter["timestamp"].astype(float).astype("int64"),
        }
    )
    item = _read_atomic(root / "ml-100k.item")
    items = pd.DataFrame(
        {
            "item_id": item["item_id"],
            "title": item["movie_title"],
            "genres": item["class"].str.replace(" ", "|"),
        }
    )
    user = _read_atomic(root / "ml-100k.user")
    users = user[["user_id", "age", "gender", "occupation"]].copy()
    return Dataset(interactions=interactions, items=items, users=users)


@dataclass(frozen=True)
class CsvSource:
    """A CSV held in memory (an upload): ``name`` is what errors call the file, ``content`` its UTF-8 text
    or bytes; or, with ``stream``, a binary file object read once from its current position (an upload
    spooled to disk: never read into memory whole)."""

    name: str
    content: str | bytes = b""
    stream: BinaryIO | None = None


CsvInput = Path | CsvSource


@dataclass(frozen=True)
class CsvData:
    """What ``read_csv_data`` returns: the dataset plus, per frame, the file and the 1-based line each row
    came from (``origins["interactions" | "items" | "users"] = (file name, lines)``), so that a later
    check (against a database) can name the line too."""

    dataset: Dataset
    origins: dict[str, tuple[str, tuple[int, ...]]]


def source_name(source: CsvInput) -> str:
    """What errors call a file: its path, or an upload's name."""
    return source.name if isinstance(source, CsvSource) else str(source)


def _fail(path: CsvInput | str, line: int, column: str, why: str) -> DataError:
    name = path if isinstance(path, str) else source_name(path)
    return DataError(f"{name}: line {line}, column {column!r}: {why}", name, line, column)


# The three files and their columns (canonical names).  Headers may also use MovieLens' own names
# (ml-latest, ml-25m: ``userId,movieId,rating,timestamp`` and ``movieId,title,genres``) or snake_case ids.
FileKind = Literal["ratings", "items", "users"]
COLUMNS: dict[FileKind, tuple[str, ...]] = {
    "ratings": ("user", "item", "rating", "timestamp"),
    "items": ("item", "title", "genres"),
    "users": ("user", "age", "gender", "occupation"),
}
REQUIRED: dict[FileKind, tuple[str, ...]] = {
    "ratings": ("user", "item", "rating", "timestamp"),
    "items": ("item", "title"),
    "users": ("user",),
}
COLUMN_ALIASES = {
    "userid": "user",
    "user_id": "user",
    "movieid": "item",
    "movie_id": "item",
    "itemid": "item",
    "item_id": "item",
}
# MovieLens 1M/10M ``.dat`` files: no header, fields separated by "::", in this order
# (ratings.dat ``UserID::MovieID::Rating::Timestamp``, movies.dat ``MovieID::Title::Genres``,
# users.dat ``UserID::Gender::Age::Occupation::Zip-code``; 10M has no users.dat)
DAT_SEPARATOR = "::"
DAT_COLUMNS: dict[FileKind, tuple[str, ...]] = {
    "ratings": ("user", "item", "rating", "timestamp"),
    "items": ("item", "title", "genres"),
    "users": ("user", "gender", "age", "occupation", "zip"),
}
Row = tuple[int, dict[str, str]]  # (1-based line, canonical column -> stripped text)


def _canonical(column: str) -> str:
    name = column.strip()
    return COLUMN_ALIASES.get(name.lower(), name)


@contextmanager
def _binary(source: CsvInput) -> Iterator[BinaryIO]:
    name = source_name(source)
    if isinstance(source, CsvSource):
        if source.stream is not None:
            yield source.stream
            return
        raw = source.content
        yield io.BytesIO(raw.encode() if isinstance(raw, str) else raw)
        return
    if not source.exists():
        raise DataError(f"{name}: file not found", name)
    with source.open("rb") as file:
        yield file


def _is_dat(first_line: bytes) -> bool:
    return DAT_SEPARATOR.encode() in first_line


def iter_rows(source: CsvInput, kind: FileKind) -> Iterator[Row]:
    """The rows of a ratings, items or users file, one at a time (the file is streamed, never held whole):
    a CSV with a header (``COLUMNS``, MovieLens' names accepted: ``COLUMN_ALIASES``; UTF-8, a byte-order
    mark allowed) or a MovieLens ``.dat`` file (``::``, no header; UTF-8, else Latin-1 as ML-1M ships).
    Empty lines are skipped.  DataError (file, line, column) for a missing column, a row with more fields
    than the header, undecodable text or broken quoting."""
    with _binary(source) as raw:
        first = raw.readline()
        lines = itertools.chain([first], raw)  # a binary file iterates by line, its line ends kept
        if _is_dat(first.removeprefix(b"\xef\xbb\xbf")):
            yield from _dat_rows(source_name(source), lines, kind)
        else:
            yield from _csv_rows(source_name(source), lines, kind)


def _dat_rows(name: str, lines: Iterable[bytes], kind: FileKind) -> Iterator[Row]:
    columns = DAT_COLUMNS[kind]
    for line, data in enumerate(lines, start=1):
        try:
            text = data.decode("utf-8-sig" if line == 1 else "utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")  # ML-1M's movies.dat is Latin-1
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        fields = text.split(DAT_SEPARATOR)
        if len(fields) != len(columns):
            why = f"{len(fields)} '::'-separated fields, expected {len(columns)}"
            raise _fail(name, line, "<fields>", why)
        yield line, {c: f.strip() for c, f in zip(columns, fields, strict=True)}


def _csv_rows(name: str, lines: Iterable[bytes], kind: FileKind) -> Iterator[Row]:
    reader = csv.reader(codecs.iterdecode(lines, "utf-8-sig"))
    try:
        header = [_canonical(h) for h in next(reader, [])]
        missing = [c for c in REQUIRED[kind] if c not in header]
        if missing:
            raise DataError(f"{name}: line 1: missing column(s) {missing}; header is {header}", name, 1)
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if len(fields) > len(header):
                raise _fail(name, reader.line_num, "<extra>", f"more fields than the header's {len(header)}")
            yield reader.line_num, {c: f.strip() for c, f in zip(header, fields, strict=False)}
    except csv.Error as error:
        raise DataError(f"{name}: line {reader.line_num}: {error}", name, reader.line_num) from None
    except UnicodeDecodeError as error:
        line = reader.line_num + 1
        raise DataError(f"{name}: line {line}: not UTF-8 text ({error.reason})", name, line) from None


def parse_item(source: CsvInput | str, line: int, row: dict[str, str]) -> dict[str, str]:
    """An items row as ``{"item_id", "title", "genres"}``; DataError naming the line and column."""
    item, title = row.get("item", ""), row.get("title", "")
    if not item:
        raise _fail(source, line, "item", "empty item id")
    if not title:
        raise _fail(source, line, "title", "empty title")
    return {"item_id": item, "title": title, "genres": row.get("genres", "")}


def parse_rating(
    source: CsvInput | str, line: int, row: dict[str, str], known_items: Container[str]
) -> dict[str, str | float | int]:
    """A ratings row as ``{"user_id", "item_id", "rating", "timestamp"}`` (rating a float in [0, 10],
    half stars included; timestamp unix seconds); ``known_items``: the items it may name."""
    user, item = row.get("user", ""), row.get("item", "")
    if not user:
        raise _fail(source, line, "user", "empty user id")
    if item not in known_items:
        raise _fail(source, line, "item", f"unknown item {item!r} (not in the items file)")
    try:
        rating = float(row["rating"])
    except ValueError:
        raise _fail(source, line, "rating", f"not a number: {row['rating']!r}") from None
    if not 0 <= rating <= 10:
        raise _fail(source, line, "rating", f"out of range [0, 10]: {rating}")
    try:
        timestamp = int(float(row["timestamp"]))
    except (ValueError, OverflowError):
        raise _fail(source, line, "timestamp", f"not a unix time: {row['timestamp']!r}") from None
    return {"user_id": user, "item_id": item, "rating": rating, "timestamp": timestamp}


def parse_user(source: CsvInput | str, line: int, row: dict[str, str]) -> dict[str, str]:
    """A users row as ``{"user_id", "age", "gender", "occupation"}`` (missing fields empty)."""
    user = row.get("user", "")
    if not user:
        raise _fail(source, line, "user", "empty user id")
    return {"user_id": user, **{c: row.get(c, "") for c in ("age", "gender", "occupation")}}


def import_csv(ratings_path: CsvInput, items_path: CsvInput, users_path: CsvInput | None = None) -> Dataset:
    """Read a user's own data: ratings CSV (user,item,rating,timestamp), items CSV (item,title[,genres]),
    optional users CSV (user[,age,gender,occupation]); MovieLens' own headers and ``.dat`` files too
    (``iter_rows``).

    Each argument is a file path or a ``CsvSource`` (in-memory text or bytes, e.g. an HTTP upload).
    Everything is validated before anything is returned, so a bad file never leaves a half import.
    Raises ``DataError`` naming the file, the 1-based line (header = line 1) and the column.
    """
    return read_csv_data(ratings_path, items_path, users_path).dataset


def read_csv_data(
    ratings: CsvInput,
    items: CsvInput,
    users: CsvInput | None = None,
    known_items: Iterable[str] = (),
) -> CsvData:
    """``import_csv`` plus where each row came from.  ``known_items``: item ids that ratings may name
    besides those of the items file (the catalog already stored, for an incremental import)."""
    item_frame, item_lines = _read(items, "items")
    catalog = set(item_frame["item_id"]) | set(known_items)
    rating_frame, rating_lines = _read(ratings, "ratings", catalog)
    if users is not None:
        user_frame, user_lines = _read(users, "users")
    else:
        user_frame, user_lines = pd.DataFrame(columns=["user_id", "age", "gender", "occupation"]), ()
    origins = {
        "interactions": (source_name(ratings), rating_lines),
        "items": (source_name(items), item_lines),
        "users": (source_name(users) if users is not None else "", user_lines),
    }
    return CsvData(Dataset(interactions=rating_frame, items=item_frame, users=user_frame), origins)


class DuplicateCheck:
    """Refuses a key seen on an earlier line of the same file; ``what``: the message, ``{}`` the key."""

    def __init__(self, source: CsvInput | str, column: str, what: str) -> None:
        self.source, self.column, self.what = source, column, what
        self.first_line: dict[object, int] = {}

    def check(self, key: object, line: int, shown: str) -> None:
        first = self.first_line.setdefault(key, line)
        if first != line:
            raise _fail(self.source, line, self.column, f"{self.what.format(shown)} (first on line {first})")


# per file: the fields that must be unique and the message of a repeat, the frame's columns
_UNIQUE: dict[FileKind, tuple[tuple[str, ...], str, str, list[str]]] = {
    "items": (("item_id",), "item", "duplicate item id {}", ["item_id", "title", "genres"]),
    "ratings": (("user_id", "item_id"), "item", "item {} rated twice", INTERACTION_COLUMNS),
    "users": (("user_id",), "user", "duplicate user id {}", ["user_id", "age", "gender", "occupation"]),
}


def _read(
    path: CsvInput, kind: FileKind, known_items: set[str] | None = None
) -> tuple[pd.DataFrame, tuple[int, ...]]:
    """A whole file as a frame (``prepare`` needs it whole) and the line of each row; at least one row
    of ratings and of items."""
    keys, column, message, columns = _UNIQUE[kind]
    duplicates = DuplicateCheck(path, column, message)
    records: list[dict[str, object]] = []
    lines = []
    for line, row in iter_rows(path, kind):
        record: dict[str, object]
        if kind == "ratings":
            record = dict(parse_rating(path, line, row, known_items or set()))
        else:
            record = dict(parse_item(path, line, row) if kind == "items" else parse_user(path, line, row))
        duplicates.check(tuple(record[k] for k in keys), line, repr(record[keys[-1]]))
        records.append(record)
        lines.append(line)
    if not records and kind != "users":
        raise DataError(f"{source_name(path)}: no {kind}", source_name(path))
    return pd.DataFrame(records, columns=columns), tuple(lines)


# MovieLens folders as downloaded: the first layout whose ratings and items files exist is used
MOVIELENS_LAYOUTS = (
    ("ratings.csv", "items.csv", "users.csv"),  # this project's own CSVs
    ("ratings.csv", "movies.csv", "users.csv"),  # ml-latest-small, ml-latest, ml-25m, ml-32m (no users)
    ("ratings.dat", "movies.dat", "users.dat"),  # ml-1m (ml-10m: no users.dat)
)


def find_data_files(folder: Path) -> tuple[Path, Path, Path | None]:
    """(ratings, items, users or None) of a data folder (``MOVIELENS_LAYOUTS``); DataError when none fits."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    for ratings, items, users in MOVIELENS_LAYOUTS:
        if (folder / ratings).is_file() and (folder / items).is_file():
            return folder / ratings, folder / items, (folder / users if (folder / users).is_file() else None)
    wanted = "; ".join(f"{r} + {i} [+ {u}]" for r, i, u in MOVIELENS_LAYOUTS)
    raise DataError(f"{folder}: no ratings and items files found (looked for {wanted})")


# ---------------------------------------------------------------------------------------------- samples


def encode_history(history: Iterable[tuple[str, float]]) -> str:
    """History as a compact string ``item:rating|item:rating`` (oldest first) for CSV storage."""
    return "|".join(f"{item}:{rating:g}" for item, rating in history)


def decode_history(text: str) -> list[tuple[str, float]]:
    if not text:
        return []
    out = []
    for part in text.split("|"):
        item, _, rating = part.rpartition(":")
        out.append((item, float(rating)))
    return out


MIN_USERS_FOR_HOLDOUT = 10  # from this many users on, a fraction > 0 holds out at least two


def holdout_users(user_ids: Iterable[str], fraction: float) -> set[str]:
    """The users held out of training: the ``round(fraction * users)`` users with the smallest
    ``sha256("holdout:" + user_id)`` (deterministic, independent of the order and of the other users'
    data), at least two when ``fraction > 0`` and there are ``MIN_USERS_FOR_HOLDOUT`` users or more, and
    never all of them."""
    users = sorted(set(user_ids))
    if fraction <= 0 or not users:
        return set()
    count = round(fraction * len(users))
    if len(users) >= MIN_USERS_FOR_HOLDOUT:
        count = max(2, count)
    ranked = sorted(users, key=lambda user: hashlib.sha256(f"holdout:{user}".encode()).hexdigest())
    return set(ranked[: min(count, len(users) - 1)])


def build_samples(interactions: pd.DataFrame, config: SampleConfig) -> pd.DataFrame:
    """One sample per interaction that has at least ``min_history`` earlier ratings by the same user.

    Ties in time are broken by item id so that the result is deterministic.  Every interaction of a
    ``holdout_users`` user is split "holdout"; over the other users the split is global and
    chronological: the earliest interactions train, the next validate, the latest test.
    """
    # a sampled negative (implicit feedback) is a sample but never part of a prompt history; at equal time
    # it sorts before its positive, so both see the same history (data without negatives keeps its order)
    ordered = interactions.assign(sampled=interactions.get("sampled", False)).assign(
        _event=lambda frame: ~frame["sampled"].astype(bool)
    )
    ordered = ordered.sort_values(["timestamp", "user_id", "_event", "item_id"], kind="stable").reset_index(
        drop=True
    )
    held_out = ordered["user_id"].isin(holdout_users(ordered["user_id"], config.holdout_user_fraction))
    n = int((~held_out).sum())
    train_end = round(n * (1 - config.valid_fraction - config.test_fraction))
    valid_end = round(n * (1 - config.test_fraction))
    split = ["train"] * train_end + ["valid"] * (valid_end - train_end) + ["test"] * (n - valid_end)
    ordered["split"] = "holdout"
    ordered.loc[~held_out, "split"] = split

    records = []
    for _user, group in ordered.groupby("user_id", sort=False):
        past: list[tuple[str, float]] = []
        names = ("user_id", "item_id", "rating", "timestamp", "split", "sampled")
        columns = (group[c].tolist() for c in names)
        for user_id, item_id, rating, timestamp, split_name, sampled in zip(*columns, strict=True):
            if len(past) >= config.min_history:
                records.append(
                    (
                        user_id,
                        item_id,
                        float(rating),
                        int(timestamp),
                        int(rating > config.like_threshold),
                        encode_history(past[-config.history_len :]),
                        split_name,
                    )
                )
            if not sampled:
                past.append((str(item_id), float(rating)))
    samples = pd.DataFrame.from_records(records, columns=SAMPLE_COLUMNS)
    return samples.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def prepare(
    dataset: Dataset, config: SampleConfig | None = None, feedback: FeedbackConfig | None = None
) -> PreparedData:
    """Build samples and splits from a dataset, its interactions read as ``feedback`` says (default:
    explicit ratings with ``config.like_threshold``)."""
    cfg = config or SampleConfig()
    if feedback is not None:
        cfg = feedback.sample_config(cfg)
        interactions = derive_feedback(dataset.interactions, dataset.items["item_id"], feedback)
    else:
        interactions = dataset.interactions
    return PreparedData(build_samples(interactions, cfg), dataset.items, dataset.users, cfg)


# ---------------------------------------------------------------------------------------------- feedback

FEEDBACK_KINDS = ("explicit", "implicit")
IMPLICIT_POSITIVE, IMPLICIT_NEGATIVE = 1.0, 0.0  # the ratings implicit samples carry
IMPLICIT_THRESHOLD = 0.5  # between them: label = rating > threshold


@dataclass(frozen=True)
class FeedbackConfig:
    """How the rows of a ratings CSV become labelled samples.

    ``explicit``: each row is a rating; label 1 when ``rating > like_threshold``.  ``implicit``: each row is
    an event (a click, a watch; its rating column is ignored) and a positive (rating 1); for each positive,
    ``negatives_per_positive`` items the user never interacted with are drawn uniformly without
    replacement as negatives (rating 0, label 0) at the positive's time (fewer when the catalog runs out).
    The draw is seeded by ``seed`` and the user id, so a user's negatives do not depend on other users.
    Negatives are samples (trained on, and forgotten with their user) but never part of a prompt history.
    """

    kind: str = "explicit"
    like_threshold: float = 3.0  # explicit only; becomes the prepared data's ``SampleConfig.like_threshold``
    negatives_per_positive: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FEEDBACK_KINDS:
            raise ValueError(f"feedback kind must be one of {FEEDBACK_KINDS}, got {self.kind!r}")
        if self.negatives_per_positive < 1:
            raise ValueError(f"negatives_per_positive must be >= 1, got {self.negatives_per_positive}")

    def sample_config(self, config: SampleConfig) -> SampleConfig:
        """``config`` with the like threshold this feedback labels by."""
        threshold = self.like_threshold if self.kind == "explicit" else IMPLICIT_THRESHOLD
        return replace(config, like_threshold=threshold)


def sample_negatives(
    interactions: pd.DataFrame, item_ids: Iterable[str], per_positive: int, seed: int
) -> pd.DataFrame:
    """Negatives for implicit feedback (see ``FeedbackConfig``): rows user_id, item_id, rating 0,
    timestamp (the positive's)."""
    catalog = sorted(set(item_ids))
    records = []
    for user, group in interactions.groupby("user_id", sort=True):
        seen = set(group["item_id"])
        unseen = [item for item in catalog if item not in seen]
        user_seed = int.from_bytes(hashlib.sha256(f"negatives:{user}".encode()).digest()[:8], "big")
        rng = np.random.default_rng([seed, user_seed])
        ordered = group.sort_values(["timestamp", "item_id"], kind="stable")
        wanted = min(len(unseen), per_positive * len(ordered))
        drawn = [unseen[k] for k in rng.choice(len(unseen), size=wanted, replace=False)] if wanted else []
        times = np.repeat(ordered["timestamp"].to_numpy(), per_positive)[:wanted]
        records += [(user, item, IMPLICIT_NEGATIVE, int(t)) for item, t in zip(drawn, times, strict=True)]
    return pd.DataFrame.from_records(records, columns=INTERACTION_COLUMNS)


def derive_feedback(
    interactions: pd.DataFrame, item_ids: Iterable[str], feedback: FeedbackConfig
) -> pd.DataFrame:
    """The interactions to build samples from: unchanged for explicit feedback; for implicit, the events
    as positives plus sampled negatives, with a ``sampled`` column that keeps negatives out of histories."""
    if feedback.kind == "explicit":
        return interactions
    events = interactions[INTERACTION_COLUMNS].assign(rating=IMPLICIT_POSITIVE, sampled=False)
    negatives = sample_negatives(events, item_ids, feedback.negatives_per_positive, feedback.seed)
    return pd.concat([events, negatives.assign(sampled=True)], ignore_index=True)


def select_forget(
    samples: pd.DataFrame,
    users: Iterable[str] = (),
    pairs: Iterable[tuple[str, str]] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``samples`` into (forget, retain).

    ``users``: every sample of these users is forgotten.  ``pairs``: (user, item) pairs whose samples
    are forgotten (a partial request).  Raises ``ValueError`` if the forget set would be empty.
    """
    user_set = set(users)
    pair_set = set(pairs)
    keys = list(zip(samples["user_id"], samples["item_id"], strict=True))
    mask = samples["user_id"].isin(user_set) | pd.Series([k in pair_set for k in keys], index=samples.index)
    forget, retain = samples[mask].reset_index(drop=True), samples[~mask].reset_index(drop=True)
    if forget.empty:
        raise ValueError("forget set is empty: no sample matches the given users/items")
    return forget, retain


# ---------------------------------------------------------------------------------------------- storage


def frame_hash(*frames: pd.DataFrame, extra: str = "") -> str:
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(frame.to_csv(index=False).encode())
    digest.update(extra.encode())
    return digest.hexdigest()


def save_prepared(data: PreparedData, folder: Path) -> str:
    """Write samples/items/users CSVs and ``manifest.json`` (config + content sha256). Returns the hash."""
    folder.mkdir(parents=True, exist_ok=True)
    data.samples.to_csv(folder / "samples.csv", index=False)
    data.items.to_csv(folder / "items.csv", index=False)
    data.users.to_csv(folder / "users.csv", index=False)
    content_hash = data.content_hash()
    counts = {name: int((data.samples["split"] == name).sum()) for name in SPLITS}
    manifest = {"sha256": content_hash, "config": asdict(data.config), "counts": counts}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return content_hash


def load_prepared(folder: Path) -> PreparedData:
    """Read what ``save_prepared`` wrote; checks the recorded hash so a tampered copy is refused."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise DataError(f"{folder}: no prepared data (run `e2u data prepare`)")
    manifest = json.loads(manifest_path.read_text())
    read = {"dtype": str, "keep_default_na": False}
    samples = pd.read_csv(folder / "samples.csv", **read)  # type: ignore[call-overload]
    samples["rating"] = samples["rating"].astype(float)
    samples["timestamp"] = samples["timestamp"].astype("int64")
    samples["label"] = samples["label"].astype("int64")
    items = pd.read_csv(folder / "items.csv", **read)  # type: ignore[call-overload]
    users = pd.read_csv(folder / "users.csv", **read)  # type: ignore[call-overload]
    # data prepared before users were held out carries no holdout_user_fraction: it held out none
    config = SampleConfig(**{"holdout_user_fraction": 0.0, **manifest["config"]})
    data = PreparedData(samples, items, users, config)
    if data.content_hash() != manifest["sha256"]:
        raise DataError(f"{folder}: content does not match the sha256 in manifest.json")
    return data


def drop_interactions(
    prepared: PreparedData,
    users: Iterable[str] = (),
    pairs: Iterable[tuple[str, str]] = (),
) -> PreparedData:
    """A copy of ``prepared`` without an erased scope (pure; nothing is written).

    ``users``: every sample and the profile of these users go.  ``pairs``: the samples of these (user,
    item) pairs go, and those items leave the same user's remaining prompt histories.  Items (the
    catalog) stay.  An empty scope returns an equal copy.
    """
    user_set = set(users)
    gone: dict[str, set[str]] = {}
    for user, item in pairs:
        gone.setdefault(user, set()).add(item)
    samples = prepared.samples
    keys = zip(samples["user_id"], samples["item_id"], strict=True)
    dropped = [u in user_set or i in gone.get(u, ()) for u, i in keys]
    kept = samples[~pd.Series(dropped, index=samples.index, dtype=bool)].reset_index(drop=True)
    if gone:
        kept["history"] = [
            encode_history([(i, r) for i, r in decode_history(h) if i not in gone.get(u, ())])
            if u in gone
            else h
            for u, h in zip(kept["user_id"], kept["history"], strict=True)
        ]
    users_kept = prepared.users[~prepared.users["user_id"].isin(user_set)].reset_index(drop=True)
    return PreparedData(kept, prepared.items.copy(), users_kept, prepared.config)
