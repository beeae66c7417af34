"""Feedback as configuration: explicit ratings with a threshold, or implicit events with sampled
negatives (uniform over the items a user never interacted with, k per positive, seeded)."""

from __future__ import annotations

import pandas as pd
import pytest

from core.ml.data import Dataset, FeedbackConfig, SampleConfig, decode_history, prepare, sample_negatives
from tests.conftest import synthetic_dataset

CONFIG = SampleConfig(history_len=3)


def test_explicit_feedback_labels_by_its_threshold() -> None:
    dataset = synthetic_dataset()
    default = prepare(dataset, CONFIG)
    assert prepare(dataset, CONFIG, FeedbackConfig()).samples.equals(default.samples)  # the old labels
    strict = prepare(dataset, CONFIG, FeedbackConfig(like_threshold=4.0))
    assert strict.config.like_threshold == 4.0
    assert (strict.samples["label"] == (strict.samples["rating"] > 4.0).astype(int)).all()
    assert strict.samples["label"].sum() < default.samples["label"].sum()


def _clicks() -> Dataset:
    dataset = synthetic_dataset()
    return Dataset(dataset.interactions.assign(rating=7.0), dataset.items, dataset.users)  # ratings ignored


def test_implicit_feedback_samples_k_unseen_negatives_per_event() -> None:
    dataset = _clicks()
    prepared = prepare(dataset, CONFIG, FeedbackConfig(kind="implicit", negatives_per_positive=1, seed=3))
    samples = prepared.samples
    events = dataset.interactions
    positives, negatives = samples[samples["label"] == 1], samples[samples["label"] == 0]
    assert len(positives) == len(events) and (positives["rating"] == 1.0).all()
    assert len(negatives) == len(events) and (negatives["rating"] == 0.0).all()
    seen = set(zip(events["user_id"], events["item_id"], strict=True))
    pairs = list(zip(negatives["user_id"], negatives["item_id"], strict=True))
    assert not seen & set(pairs) and len(set(pairs)) == len(pairs)  # unseen items, each once per user
    for user, group in negatives.groupby("user_id"):  # one per event, at the event's time
        times = events[events["user_id"] == user]["timestamp"]
        assert sorted(group["timestamp"]) == sorted(times)
    # prompt histories hold the user's events only; a negative sees its event's history
    for user, item, history in zip(samples["user_id"], samples["item_id"], samples["history"], strict=True):
        assert all((user, i) in seen and r == 1.0 for i, r in decode_history(history)), (user, item)
    keys = zip(positives["user_id"], positives["timestamp"], strict=True)
    event_history = dict(zip(keys, positives["history"], strict=True))
    assert all(
        event_history[(u, t)] == h
        for u, t, h in zip(negatives["user_id"], negatives["timestamp"], negatives["history"], strict=True)
    )


def test_negatives_are_seeded_per_user() -> None:
    events = _clicks().interactions
    items = [f"i{i}" for i in range(20)]
    first = sample_negatives(events, items, 1, seed=0)
    assert first.equals(sample_negatives(events, items, 1, seed=0))
    assert not first.equals(sample_negatives(events, items, 1, seed=1))
    # another user's data does not change a user's draw
    alone = sample_negatives(events[events["user_id"] == "u3"], items, 1, seed=0)
    assert alone.reset_index(drop=True).equals(first[first["user_id"] == "u3"].reset_index(drop=True))


def test_a_small_catalog_gives_fewer_negatives() -> None:
    events = pd.DataFrame(
        {"user_id": ["a", "a"], "item_id": ["x", "y"], "rating": [1.0, 1.0], "timestamp": [1, 2]}
    )
    negatives = sample_negatives(events, ["x", "y", "z"], 4, seed=0)
    assert list(negatives["item_id"]) == ["z"] and list(negatives["timestamp"]) == [1]


@pytest.mark.parametrize(
    ("values", "message"),
    [({"kind": "stars"}, "feedback kind must be one of"), ({"negatives_per_positive": 0}, ">= 1")],
)
def test_a_bad_feedback_config_is_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeedbackConfig(**values)  # type: ignore[arg-type]
