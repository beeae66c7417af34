"""Generated folders shaped like the MovieLens downloads users bring (never real data): ml-latest-small's
CSVs (``userId,movieId,rating,timestamp``, half stars, quoted titles with commas, no users file, extra
files beside) and ML-1M's ``::`` files (Latin-1 titles, a users file of five fields)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_ml_latest_small(folder: Path, users: int = 60, items: int = 2000, seed: int = 0) -> Path:
    """``folder`` with ratings.csv, movies.csv, tags.csv and links.csv: sparse ids (not 1..n), thousands
    of items, ratings 0.5..5.0 in half stars (3.0 and 3.5 both present), 8 to 30 ratings per user."""
    rng = np.random.default_rng(seed)
    item_ids = np.sort(rng.choice(190_000, size=items, replace=False)) + 1
    user_ids = np.sort(rng.choice(600, size=users, replace=False)) + 1
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "movies.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["movieId", "title", "genres"])
        for k, item in enumerate(item_ids):
            title = f'Film {k}, The "{["Red", "Blue"][k % 2]}" ({1930 + k % 90})'
            writer.writerow([item, title, "Action|Comedy" if k % 3 else "(no genres listed)"])
    with (folder / "ratings.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for user in user_ids:  # sorted by user then movie, as MovieLens ships it
            rated = np.sort(rng.choice(item_ids, size=int(rng.integers(8, 30)), replace=False))
            for item in rated:
                stamp = 964_000_000 + int(rng.integers(0, 10**8))
                writer.writerow([user, item, f"{rng.integers(1, 11) / 2:.1f}", stamp])
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,funny,964982703\n")
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n")
    return folder


def write_ml_1m(folder: Path) -> Path:
    """A small ML-1M-shaped folder: ratings.dat, movies.dat (one Latin-1 title), users.dat."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Misérables, Les (1995)::Drama|Musical\n"
        "3::Heat (1995)::Action|Crime|Thriller\n".encode("latin-1")
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "ratings.dat").write_text(
        "1::1::5::978300760\n1::2::3::978302109\n2::3::4::978301968\n2::1::2::978300275\n"
    )
    return folder
