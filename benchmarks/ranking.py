"""Ranking speed: the prefix-shared path against plain scoring, for one user and N candidates, measured in
the same run (ratios, not absolute times, are what to compare across machines).  ``e2u bench ranking``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from benchmarks.report import Machine
from core.ml.data import PreparedData
from core.ml.model import LoraSpec, ModelConfig, load_base, new_adapter
from core.ml.recommender import popular_unseen, user_history
from core.ml.workflows import scorer_for


@dataclass(frozen=True)
class RankingResult:
    """Median seconds of each path over ``repeats`` interleaved runs, and how far their scores differ."""

    base: str
    candidates: int
    repeats: int
    plain_seconds_median: float
    shared_seconds_median: float
    speedup: float
    max_abs_score_difference: float
    machine: str
    device: str

    def summary(self) -> str:
        return (
            f"{self.candidates} candidates, {self.base} on {self.device}: plain "
            f"{self.plain_seconds_median:.2f} s, prefix-shared {self.shared_seconds_median:.2f} s, "
            f"speed-up {self.speedup:.2f}x (max |score diff| {self.max_abs_score_difference:.2e})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RankingResult:
        return cls(**raw)


def measure(
    model: ModelConfig, data: PreparedData, user: str, candidates: int, repeats: int
) -> RankingResult:
    """Rank ``candidates`` popular items ``user`` has not rated, both ways, ``repeats`` times each, with a
    fresh (untrained) LoRA adapter on ``model``."""
    loaded = load_base(model)
    new_adapter(loaded, LoraSpec(), "bench", seed=0)
    scorer = scorer_for(loaded, data)
    history = user_history(data.samples, user, data.config.history_len)
    items = popular_unseen(data.samples, user, candidates)
    scorer.rank(user, history, items[:4], share_prefix=True)  # warm-up
    plain_times, shared_times, max_diff = [], [], 0.0
    for _ in range(repeats):  # interleaved so that machine noise hits both paths alike
        start = time.perf_counter()
        plain = scorer.rank(user, history, items, share_prefix=False)
        plain_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        shared = scorer.rank(user, history, items, share_prefix=True)
        shared_times.append(time.perf_counter() - start)
        max_diff = max(max_diff, float(np.abs(plain - shared).max()))
    return RankingResult(
        base=model.base,
        candidates=len(items),
        repeats=repeats,
        plain_seconds_median=float(np.median(plain_times)),
        shared_seconds_median=float(np.median(shared_times)),
        speedup=float(np.median(plain_times) / np.median(shared_times)),
        max_abs_score_difference=max_diff,
        machine=Machine.here(loaded.device).summary(),
        device=str(loaded.device),
    )
