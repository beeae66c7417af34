"""The synthetic MovieLens generator: a folder the prepare and import paths read as a download, exact
counts, seeded, and streamed (memory per extra user is its few per-user numbers, not its ratings)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from benchmarks.synthetic import SynthConfig, write_synthetic
from core.ml.data import SampleConfig, find_data_files, import_csv, prepare


def test_the_folder_reads_as_movielens_with_exact_counts(tmp_path: Path) -> None:
    config = SynthConfig(items=300, users=50, ratings=700, seed=3, chunk_users=7)
    result = write_synthetic(tmp_path / "synth", config)
    ratings, items, users = find_data_files(tmp_path / "synth")
    assert (ratings.name, items.name, users and users.name) == ("ratings.csv", "movies.csv", "users.csv")
    dataset = import_csv(ratings, items, users)  # refuses repeated pairs, unknown items, bad values
    assert result.ratings_written == len(dataset.interactions) == 700
    assert len(dataset.items) == 300 and len(dataset.users) == 50
    per_user = dataset.interactions.groupby("user_id").size()
    assert len(per_user) == 50 and per_user.min() >= 1 and per_user.max() <= 150
    assert set(dataset.interactions["rating"]) <= {k / 2 for k in range(1, 11)}
    assert dataset.items["title"].str.contains(",").any()  # quoted titles, as MovieLens has
    prepared = prepare(dataset, SampleConfig(history_len=3))
    assert len(prepared.samples) == 700 and set(prepared.samples["split"]) >= {"train", "test"}


def test_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    config = SynthConfig(items=200, users=30, ratings=300, seed=1, chunk_users=8)
    write_synthetic(tmp_path / "a", config)
    write_synthetic(tmp_path / "b", config)
    for name in ("ratings.csv", "movies.csv", "users.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    write_synthetic(tmp_path / "c", SynthConfig(items=200, users=30, ratings=300, seed=2, chunk_users=8))
    assert (tmp_path / "a" / "ratings.csv").read_bytes() != (tmp_path / "c" / "ratings.csv").read_bytes()


def test_popular_items_take_a_large_share(tmp_path: Path) -> None:
    write_synthetic(tmp_path, SynthConfig(items=2000, users=400, ratings=4000, seed=0))
    counts = import_csv(*find_data_files(tmp_path)).interactions["item_id"].value_counts()
    assert counts.iloc[:100].sum() > 0.3 * counts.sum()  # 5% of the items: a long tail, as MovieLens


def _peak(folder: Path, users: int) -> int:
    tracemalloc.start()
    try:
        write_synthetic(folder, SynthConfig(items=1000, users=users, ratings=5 * users, chunk_users=500))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_by_per_user_numbers_not_by_ratings(tmp_path: Path) -> None:
    small, large = _peak(tmp_path / "small", 4_000), _peak(tmp_path / "large", 16_000)
    # holding the ratings (5 per user) or the users file whole costs > 150 bytes per user; the arrays of
    # per-user counts and activity shares cost ~30
    assert (large - small) / 12_000 < 60, (small, large)


def test_impossible_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="ratings must lie"):
        SynthConfig(items=10, users=5, ratings=4)
    with pytest.raises(ValueError, match="ratings must lie"):
        SynthConfig(items=10, users=5, ratings=26)
