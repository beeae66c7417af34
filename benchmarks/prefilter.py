"""Candidate pre-filtering: what a smaller candidate pool costs in reach.  ``e2u bench prefilter``.

A recommendation without candidates ranks the ``pool_size`` most popular items the user has not rated
(``core.services.recommendations.candidate_items``): the pool is a pre-filter, and the model's forward
pass costs in proportion to its size (``e2u bench ranking`` measures the cost per candidate).  What a
pre-filter can lose does not depend on the adapter: an item outside the pool cannot be recommended,
however well the model would score it.  So this measures, for each pool size, the share of each test
user's liked test items that fall inside the pool (recall of the pool), averaged over users with a
bootstrap 95% interval, for three ways of choosing the pool from what the service knows before the test
period (the train and valid ratings):

- ``popularity``: the most-rated unseen items (what the service does);
- ``item_mean``: the unseen items with the highest shrunk mean rating (a cheap non-LLM scorer);
- ``random``: unseen items drawn uniformly (the floor), one seeded draw per user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.ml.data import PreparedData

FILTERS = ("popularity", "item_mean", "random")
PRIOR_RATINGS = 10  # the item-mean's shrinkage: an item with few ratings leans on the global mean


@dataclass(frozen=True)
class PoolRecall:
    """Mean recall of the pool over ``users`` test users, with its bootstrap 95% interval."""

    filter: str
    pool_size: int
    recall: float
    low: float
    high: float


@dataclass(frozen=True)
class PrefilterResult:
    users: int  # test users with at least one liked test item
    liked_items: int  # their liked test items, all together
    catalog_items: int
    rows: list[PoolRecall]
    bootstrap_samples: int

    def table(self) -> str:
        sizes = sorted({r.pool_size for r in self.rows})
        lines = [
            f"recall of the candidate pool over {self.users} test users ({self.liked_items} liked test "
            f"items, catalogue {self.catalog_items}); mean [bootstrap 95%, {self.bootstrap_samples} samples]",
            "pool size  " + "  ".join(f"{name:>22}" for name in FILTERS),
        ]
        by_key = {(r.filter, r.pool_size): r for r in self.rows}
        for size in sizes:
            cells = []
            for name in FILTERS:
                r = by_key[(name, size)]
                cells.append(f"{r.recall:6.3f} [{r.low:.3f}, {r.high:.3f}]".rjust(22))
            lines.append(f"{size:>9}  " + "  ".join(cells))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PrefilterResult:
        return cls(**{**raw, "rows": [PoolRecall(**r) for r in raw["rows"]]})


def _orders(known: pd.DataFrame) -> dict[str, list[str]]:
    """Every rated item, best first, by each deterministic filter (ties broken by item id)."""
    stats = known.groupby("item_id")["rating"].agg(["size", "sum"]).reset_index()
    mean = known["rating"].mean()
    stats["shrunk"] = (stats["sum"] + PRIOR_RATINGS * mean) / (stats["size"] + PRIOR_RATINGS)
    by_count = stats.sort_values(["size", "item_id"], ascending=[False, True])["item_id"]
    by_mean = stats.sort_values(["shrunk", "item_id"], ascending=[False, True])["item_id"]
    return {"popularity": [str(i) for i in by_count], "item_mean": [str(i) for i in by_mean]}


def _items_by_user(frame: pd.DataFrame) -> dict[str, set[str]]:
    items: dict[str, set[str]] = {}
    for user, item in zip(frame["user_id"], frame["item_id"], strict=True):
        items.setdefault(str(user), set()).add(str(item))
    return items


def _pool(order: Sequence[str], seen: set[str], size: int) -> set[str]:
    pool: set[str] = set()
    for item in order:
        if len(pool) == size:
            break
        if item not in seen:
            pool.add(item)
    return pool


def measure(
    data: PreparedData, pool_sizes: Sequence[int], bootstrap: int = 2000, seed: int = 0
) -> PrefilterResult:
    """Recall of each filter's pool at each size, per test user (see the module's docstring)."""
    if not pool_sizes or min(pool_sizes) < 1:
        raise ValueError(f"pool sizes must be >= 1, got {list(pool_sizes)}")
    samples = data.samples[data.samples["split"].isin(["train", "valid", "test"])]
    known = samples[samples["split"] != "test"]
    test = samples[samples["split"] == "test"]
    liked = _items_by_user(test[test["label"] == 1])
    if not liked:
        raise ValueError("no test user has a liked test item: nothing to measure")
    seen_by_user = _items_by_user(known)
    orders = _orders(known)
    catalog = sorted({str(i) for i in data.items["item_id"]})
    rng = np.random.default_rng(seed)
    recalls: dict[tuple[str, int], list[float]] = {(n, size): [] for n in FILTERS for size in pool_sizes}
    for user, wanted in sorted(liked.items()):
        seen = seen_by_user.get(user, set())
        unseen = [i for i in catalog if i not in seen]
        shuffled = [unseen[k] for k in rng.permutation(len(unseen))]
        for size in pool_sizes:
            pools = {
                "popularity": _pool(orders["popularity"], seen, size),
                "item_mean": _pool(orders["item_mean"], seen, size),
                "random": set(shuffled[:size]),
            }
            for name, pool in pools.items():
                recalls[(name, size)].append(len(wanted & pool) / len(wanted))
    rows = []
    for (name, size), values in recalls.items():
        array = np.asarray(values)
        draws = rng.integers(0, len(array), size=(bootstrap, len(array)))
        means = array[draws].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        rows.append(PoolRecall(name, size, float(array.mean()), float(low), float(high)))
    return PrefilterResult(
        users=len(liked),
        liked_items=sum(len(w) for w in liked.values()),
        catalog_items=len(catalog),
        rows=rows,
        bootstrap_samples=bootstrap,
    )
