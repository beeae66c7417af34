"""Ranking: top-k items for a user from given candidates or from popular items the user has not rated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from core.ml.scoring import Scorer


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float


def user_history(interactions: pd.DataFrame, user_id: str, history_len: int) -> list[tuple[str, float]]:
    """The user's ``history_len`` most recent ratings, oldest first (ties broken by item id)."""
    own = interactions[interactions["user_id"] == user_id].sort_values(
        ["timestamp", "item_id"], kind="stable"
    )
    return [(str(i), float(r)) for i, r in zip(own["item_id"], own["rating"], strict=True)][-history_len:]


def popular_unseen(interactions: pd.DataFrame, user_id: str, limit: int) -> list[str]:
    """The ``limit`` most-rated items that ``user_id`` has not rated (ties broken by item id)."""
    seen = set(interactions.loc[interactions["user_id"] == user_id, "item_id"])
    counts = interactions.groupby("item_id").size().reset_index(name="n")
    counts = counts[~counts["item_id"].isin(seen)].sort_values(["n", "item_id"], ascending=[False, True])
    return [str(i) for i in counts["item_id"].head(limit)]


def recommend(
    scorer: Scorer,
    user_id: str,
    history: Sequence[tuple[str, float]],
    candidates: Sequence[str],
    k: int,
) -> list[Recommendation]:
    """Score every candidate with the prefix-shared ranker and return the best ``k``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    unique = list(dict.fromkeys(candidates))
    scores = scorer.rank(user_id, history, unique)
    ranked = sorted(zip(unique, scores, strict=True), key=lambda pair: (-pair[1], pair[0]))[:k]
    return [Recommendation(item, scorer.builder.catalog.title(item), float(score)) for item, score in ranked]
