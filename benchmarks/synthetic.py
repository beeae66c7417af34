"""A synthetic MovieLens-shaped data set of any size (``python -m benchmarks synth``): never real data.

The folder has ml-latest's files and headers (``ratings.csv`` ``userId,movieId,rating,timestamp``,
``movies.csv`` ``movieId,title,genres``) plus a ``users.csv`` (``userId,age,gender,occupation``, ML-1M's
codes and ML-100K's occupations), so ``e2u data prepare --from``, ``e2u data import --from`` and the
admin import read it as they read a download.  Its shape follows MovieLens: item popularity falls as a
power of the item's rank (a few blockbusters, a long tail), activity is heavy-tailed across users (a
log-normal share of the ratings), ratings are half stars with ml-latest-small's frequencies, ids are
dense but the popular items are spread over them.  Every user has at least one rating; no (user, item)
pair repeats; rows are sorted by user then item, as MovieLens ships them.

Streaming: users are written a chunk at a time, so memory holds the per-item and per-user arrays
(8 bytes each) and one chunk of ratings, whatever the ratings count.  Seeded: the same arguments give
the same bytes.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
OCCUPATIONS = [
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
]
AGES = (1, 18, 25, 35, 45, 50, 56)  # ML-1M's age groups
STARS = np.arange(1, 11) / 2  # 0.5 .. 5.0
STAR_SHARES = np.array([1.4, 2.8, 1.8, 7.5, 5.5, 19.9, 13.0, 26.6, 8.5, 13.1])  # ml-latest-small, in %
FIRST_TIME, LAST_TIME = 946_684_800, 1_577_836_800  # 2000-01-01 .. 2020-01-01, unix seconds


@dataclass(frozen=True)
class SynthConfig:
    """``items``, ``users``: catalogue and population sizes; ``ratings``: how many ratings in all (at
    least one per user, at most half the catalogue per user); ``popularity_exponent``: item k's share is
    proportional to 1 / (k + 10) ** exponent; ``activity_sigma``: spread of the log-normal user activity;
    ``chunk_users``: users generated and written at a time (bounds memory)."""

    items: int
    users: int
    ratings: int
    seed: int = 0
    chunk_users: int = 50_000
    popularity_exponent: float = 1.0
    activity_sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.items < 2 or self.users < 1:
            raise ValueError(f"need at least 2 items and 1 user, got {self.items} and {self.users}")
        if not self.users <= self.ratings <= self.users * (self.items // 2):
            raise ValueError(
                f"ratings must lie in [users, users * items // 2] = [{self.users}, "
                f"{self.users * (self.items // 2)}], got {self.ratings}"
            )


@dataclass(frozen=True)
class SynthResult:
    folder: str
    config: dict[str, Any]
    ratings_written: int
    seconds: float


def _popularity(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Cumulative probabilities of the items in id order (item id = position + 1)."""
    ranks = rng.permutation(config.items)  # the rank of each item id: popular items spread over the ids
    weights = 1.0 / (ranks + 10.0) ** config.popularity_exponent
    cumulative = np.cumsum(weights)
    return cumulative / cumulative[-1]


def _ratings_per_user(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``config.ratings`` in all, at least one each, at most ``items // 2`` each."""
    cap = config.items // 2
    counts = np.ones(config.users, dtype=np.int64)
    left = config.ratings - config.users
    while left > 0:  # the excess over a user's cap is dealt out again (rarely more than one round)
        share = rng.lognormal(0.0, config.activity_sigma, config.users)
        counts += rng.multinomial(left, share / share.sum())
        over = np.maximum(counts - cap, 0)
        counts -= over
        left = int(over.sum())
    return counts


def _chunk_pairs(counts: np.ndarray, cumulative: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted unique keys ``local_user * items + item_index`` with ``counts[u]`` items for user u."""
    items = len(cumulative)
    keys = np.empty(0, dtype=np.int64)
    need = counts.copy()
    while need.any():  # a repeated (user, item) draw is dropped and drawn again
        users = np.repeat(np.arange(len(counts), dtype=np.int64), need)
        drawn = np.minimum(np.searchsorted(cumulative, rng.random(len(users))), items - 1)
        keys = np.unique(np.concatenate([keys, users * items + drawn]))
        need = counts - np.bincount(keys // items, minlength=len(counts))
    return keys


def write_items(folder: Path, config: SynthConfig, rng: np.random.Generator) -> None:
    with (folder / "movies.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["movieId", "title", "genres"])
        years = rng.integers(1930, 2020, config.items)
        genre_counts = rng.integers(1, 4, config.items)
        genre_picks = rng.integers(0, len(GENRES), (config.items, 3))
        for k in range(config.items):
            genres = "|".join(dict.fromkeys(GENRES[g] for g in genre_picks[k, : genre_counts[k]]))
            title = (
                f"Synthetic Film {k + 1}, The ({years[k]})" if k % 7 == 0 else f"Film {k + 1} ({years[k]})"
            )
            writer.writerow([k + 1, title, genres])


def write_users(folder: Path, config: SynthConfig, rng: np.random.Generator) -> None:
    path = folder / "users.csv"
    path.write_text("userId,age,gender,occupation\n")
    for start in range(0, config.users, config.chunk_users):
        size = min(config.chunk_users, config.users - start)
        frame = pd.DataFrame(
            {
                "userId": np.arange(start + 1, start + size + 1),
                "age": rng.choice(AGES, size),
                "gender": rng.choice(["M", "F"], size, p=[0.7, 0.3]),
                "occupation": rng.choice(OCCUPATIONS, size),
            }
        )
        frame.to_csv(path, mode="a", header=False, index=False)


def write_ratings(folder: Path, config: SynthConfig, rng: np.random.Generator) -> int:
    """ratings.csv a chunk of users at a time; returns the rows written."""
    cumulative = _popularity(config, rng)
    counts = _ratings_per_user(config, rng)
    shares = STAR_SHARES / STAR_SHARES.sum()
    written = 0
    path = folder / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n")
    for start in range(0, config.users, config.chunk_users):
        chunk = counts[start : start + config.chunk_users]
        keys = _chunk_pairs(chunk, cumulative, rng)
        frame = pd.DataFrame(
            {
                "userId": keys // config.items + start + 1,
                "movieId": keys % config.items + 1,
                "rating": rng.choice(STARS, len(keys), p=shares),
                "timestamp": rng.integers(FIRST_TIME, LAST_TIME, len(keys)),
            }
        )
        frame.to_csv(path, mode="a", header=False, index=False, float_format="%.1f")
        written += len(frame)
    return written


def write_synthetic(folder: Path, config: SynthConfig) -> SynthResult:
    """Write ``movies.csv``, ``users.csv`` and ``ratings.csv`` into ``folder`` (created if missing)."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    write_items(folder, config, rng)
    write_users(folder, config, rng)
    written = write_ratings(folder, config, rng)
    return SynthResult(str(folder), asdict(config), written, time.perf_counter() - started)


def command(
    out: Annotated[Path, typer.Option(help="the folder to write (created if missing)")],
    items: Annotated[int, typer.Option(help="catalogue size")] = 100_000,
    users: Annotated[int, typer.Option(help="number of users")] = 100_000,
    ratings: Annotated[int | None, typer.Option(help="ratings in all (default: 5 per user)")] = None,
    seed: int = 0,
    chunk_users: Annotated[int, typer.Option(help="users per written chunk (bounds memory)")] = 50_000,
) -> None:
    """Write a synthetic MovieLens-shaped folder (ratings.csv, movies.csv, users.csv) of any size."""
    try:
        config = SynthConfig(
            items, users, ratings if ratings is not None else 5 * users, seed, chunk_users=chunk_users
        )
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    result = write_synthetic(out, config)
    typer.echo(
        f"wrote {out}: {items} items, {users} users, {result.ratings_written} ratings "
        f"in {result.seconds:.1f} s (seed {seed})"
    )
