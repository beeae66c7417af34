from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.ml.data import (
    CsvSource,
    DataError,
    SampleConfig,
    build_samples,
    decode_history,
    find_data_files,
    frame_hash,
    holdout_users,
    import_csv,
    load_movielens,
    load_prepared,
    prepare,
    read_csv_data,
    save_prepared,
    select_forget,
)
from tests.conftest import synthetic_dataset
from tests.movielens import write_ml_1m, write_ml_latest_small


def test_movielens_loads_from_the_wheel() -> None:
    ds = load_movielens()
    assert len(ds.interactions) == 100_000
    assert ds.interactions["user_id"].nunique() == 943
    assert len(ds.items) == 1682
    assert ds.items.set_index("item_id").loc["267", "title"] == "unkonwn"
    assert set(ds.interactions["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_split_is_chronological_and_history_is_earlier() -> None:
    ds = synthetic_dataset(users=30, per_user=10)
    data = prepare(ds, SampleConfig(history_len=4))
    s = data.samples
    assert s[s.split == "train"].timestamp.max() <= s[s.split == "valid"].timestamp.min()
    assert s[s.split == "valid"].timestamp.max() <= s[s.split == "test"].timestamp.min()
    ts = {(r.user_id, r.item_id): r.timestamp for r in ds.interactions.itertuples()}
    for row in s.itertuples():
        history = decode_history(row.history)
        assert len(history) <= 4
        assert all(ts[(row.user_id, item)] < row.timestamp for item, _ in history)
    assert ((s.rating > 3).astype(int) == s.label).all()
    assert len(s) == len(ds.interactions)  # min_history=0: every rating is a sample
    assert len(prepare(ds, SampleConfig(history_len=4, min_history=2)).samples) == len(s) - 2 * 30


def test_forget_selection_by_user_and_by_pair(small_data) -> None:
    train = small_data.split("train")
    forget, retain = select_forget(train, users=["u2"])
    assert set(forget.user_id) == {"u2"} and "u2" not in set(retain.user_id)
    assert len(forget) + len(retain) == len(train)
    row = train.iloc[0]
    forget, retain = select_forget(train, pairs=[(row.user_id, row.item_id)])
    assert len(forget) == 1 and len(retain) == len(train) - 1
    with pytest.raises(ValueError, match="empty"):
        select_forget(train, users=["nobody"])


def test_prepared_round_trip_and_tamper_detection(small_data, tmp_path: Path) -> None:
    sha = save_prepared(small_data, tmp_path)
    loaded = load_prepared(tmp_path)
    assert loaded.content_hash() == sha
    pd.testing.assert_frame_equal(loaded.samples, small_data.samples)
    text = (tmp_path / "samples.csv").read_text().replace(",train\n", ",test\n", 1)
    (tmp_path / "samples.csv").write_text(text)
    with pytest.raises(DataError, match="sha256"):
        load_prepared(tmp_path)


def test_users_held_out_of_training_are_whole_users_and_splits_go_on_over_the_others() -> None:
    ds = synthetic_dataset(users=30, per_user=10)
    data = prepare(ds, SampleConfig(history_len=4))  # default fraction 0.1
    s = data.samples
    held = set(s[s.split == "holdout"].user_id)
    assert held == holdout_users(ds.interactions.user_id, 0.1) and len(held) == 3
    assert held.isdisjoint(s[s.split != "holdout"].user_id)  # every sample of a held-out user
    assert len(s) == len(ds.interactions)
    # the chronological train / valid / test boundaries are those of the other users alone
    others = ds.interactions[~ds.interactions.user_id.isin(held)]
    plain = build_samples(others, SampleConfig(history_len=4, holdout_user_fraction=0.0))
    assert (s[s.split != "holdout"].split.value_counts() == plain.split.value_counts()).all()
    # deterministic, order-free, at least two from ten users on, never everyone
    users = [f"x{k}" for k in range(10)]
    assert (
        holdout_users(users, 0.1) == holdout_users(reversed(users), 0.1)
        and len(holdout_users(users, 0.1)) == 2
    )
    assert len(holdout_users(users[:9], 0.1)) == 1 and holdout_users(users, 0.0) == set()
    assert len(holdout_users(["a", "b"], 0.9)) == 1
    with pytest.raises(ValueError, match="holdout_user_fraction must be in"):
        SampleConfig(holdout_user_fraction=1.0)


def test_prepared_data_of_before_held_out_users_still_loads_with_its_hash(tmp_path: Path) -> None:
    ds = synthetic_dataset()
    old = prepare(ds, SampleConfig(history_len=3, holdout_user_fraction=0.0))
    sha = save_prepared(old, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["config"]["holdout_user_fraction"]  # the manifest as written before the field existed
    manifest["counts"].pop("holdout")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_prepared(tmp_path)
    assert loaded.config.holdout_user_fraction == 0.0 and loaded.content_hash() == sha
    assert "holdout" not in set(loaded.samples.split)
    # the hash of before: the config's JSON without the new field
    before = frame_hash(old.samples, old.items, old.users, extra=json.dumps(manifest["config"]))
    assert sha == before
    # data with held-out users hashes its fraction too
    assert prepare(ds, SampleConfig(history_len=3)).content_hash() != sha


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_import_accepts_good_files(tmp_path: Path) -> None:
    items = _write(tmp_path / "items.csv", "item,title,genres\n1,Alpha,Drama\n2,Beta,\n")
    ratings = _write(tmp_path / "r.csv", "user,item,rating,timestamp\nA,1,4,100\nA,2,2,200\nB,1,5,150\n")
    ds = import_csv(ratings, items)
    assert len(ds.interactions) == 3 and list(ds.items.title) == ["Alpha", "Beta"]


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        ("user,item,rating,timestamp\nA,1,four,100\n", "line 2, column 'rating': not a number"),
        ("user,item,rating,timestamp\nA,1,4,100\nA,9,4,100\n", "line 3, column 'item': unknown item '9'"),
        ("user,item,rating,timestamp\nA,1,4,yesterday\n", "line 2, column 'timestamp'"),
        ("user,item,rating\nA,1,4\n", "line 1: missing column(s) ['timestamp']"),
        ("user,item,rating,timestamp\n,1,4,100\n", "line 2, column 'user': empty user id"),
        ("user,item,rating,timestamp\nA,1,4,100,extra\n", "line 2, column '<extra>'"),
        ("user,item,rating,timestamp\n", "no ratings"),
    ],
)
def test_csv_import_rejects_bad_ratings_with_location(tmp_path: Path, ratings: str, message: str) -> None:
    items = _write(tmp_path / "items.csv", "item,title\n1,Alpha\n")
    path = _write(tmp_path / "ratings.csv", ratings)
    with pytest.raises(DataError) as error:
        import_csv(path, items)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_csv_import_rejects_duplicate_items(tmp_path: Path) -> None:
    items = _write(tmp_path / "items.csv", "item,title\n1,Alpha\n1,Again\n")
    ratings = _write(tmp_path / "r.csv", "user,item,rating,timestamp\nA,1,4,100\n")
    with pytest.raises(DataError, match="line 3, column 'item': duplicate"):
        import_csv(ratings, items)


def test_sample_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="history_len must be >= 1, got 0"):
        SampleConfig(history_len=0)
    with pytest.raises(ValueError, match=r"valid_fraction \+ test_fraction must be < 1"):
        SampleConfig(valid_fraction=0.6, test_fraction=0.5)


def test_csv_import_reads_in_memory_uploads_with_lines() -> None:
    items = CsvSource("i.csv", b"\xef\xbb\xbfitem,title\n1,Alpha\n")  # bytes with a byte-order mark
    ratings = CsvSource("r.csv", "user,item,rating,timestamp\n\nA,1,4,100\nB,7,4,100\n")
    data = read_csv_data(ratings, items, known_items={"7"})
    assert len(data.dataset.interactions) == 2 and data.origins["interactions"] == ("r.csv", (3, 4))
    twice = CsvSource("r.csv", "user,item,rating,timestamp\nA,1,4,100\nA,1,5,200\n")
    with pytest.raises(DataError, match=r"r\.csv: line 3, column 'item': item '1' rated twice") as error:
        import_csv(twice, items)
    assert (error.value.file, error.value.line, error.value.column) == ("r.csv", 3, "item")


def test_movielens_latest_small_is_read_with_its_own_headers_and_half_stars(tmp_path: Path) -> None:
    folder = write_ml_latest_small(tmp_path / "ml-latest-small", users=20, items=300)
    ratings, items, users = find_data_files(folder)
    assert (ratings.name, items.name, users) == ("ratings.csv", "movies.csv", None)  # tags/links ignored
    dataset = import_csv(ratings, items, users)
    assert len(dataset.items) == 300 and dataset.users.empty  # users without a profile
    assert dataset.items["title"].str.contains(', The "').all()  # quoted titles with commas and quotes
    assert set(dataset.interactions["rating"]) <= {x / 2 for x in range(1, 11)}
    prepared = prepare(dataset, SampleConfig())
    labels = dict(zip(prepared.samples["rating"], prepared.samples["label"], strict=True))
    # DESIGN: label = 1 if rating > 3: a half star above 3 is a like, 3 itself is not
    assert (labels[3.0], labels[3.5], labels[0.5], labels[5.0]) == (0, 1, 0, 1)


def test_movielens_1m_dat_files_are_read(tmp_path: Path) -> None:
    ratings, items, users = find_data_files(write_ml_1m(tmp_path / "ml-1m"))
    assert users is not None and users.name == "users.dat"
    dataset = import_csv(ratings, items, users)
    assert dataset.items.set_index("item_id").loc["2", "title"] == "Misérables, Les (1995)"  # Latin-1
    assert dataset.users.to_dict("records")[1] == {
        "user_id": "2",
        "age": "56",
        "gender": "M",
        "occupation": "16",
    }
    assert list(dataset.interactions["rating"]) == [5.0, 3.0, 4.0, 2.0]
    (tmp_path / "ml-1m" / "ratings.dat").write_text("1::1::5::978300760\n1::2::3\n")
    with pytest.raises(DataError, match=r"line 2, column '<fields>': 3 '::'-separated fields, expected 4"):
        import_csv(ratings, items)


def test_a_folder_without_ratings_and_items_is_refused_with_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(
        DataError, match=r"no ratings and items files found \(looked for ratings.csv \+ items"
    ):
        find_data_files(tmp_path)
