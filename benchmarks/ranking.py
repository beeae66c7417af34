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
    """Median seconds of each path over ``repeats`` interleaved runs (each run's seconds kept), the
    speed-up as the ratio of the medians and as the median of each repeat's own ratio (with its min-max:
    one slow run on a busy machine cannot make the ratio), and how far the paths' scores differ."""

    base: str
    candidates: int
    repeats: int
    plain_seconds_median: float
    shared_seconds_median: float
    speedup: float
    max_abs_score_difference: float
    machine: str
    device: str
    # absent from records made before they were kept (then None, and left out of the JSON)
    plain_seconds: list[float] | None = None
    shared_seconds: list[float] | None = None
    speedup_per_repeat: dict[str, float] | None = None  # median, min, max of plain / shared per repeat

    def summary(self) -> str:
        spread = self.speedup_per_repeat
        if spread is None or self.plain_seconds is None or self.shared_seconds is None:
            return (
                f"{self.candidates} candidates, {self.base}: plain {self.plain_seconds_median:.2f} s, "
                f"prefix-shared {self.shared_seconds_median:.2f} s, speed-up {self.speedup:.2f}x"
            )
        return (
            f"{self.candidates} candidates, {self.base} on {self.device}, {self.repeats} interleaved "
            f"repeats: plain median {self.plain_seconds_median:.2f} s [{min(self.plain_seconds):.2f}-"
            f"{max(self.plain_seconds):.2f}], prefix-shared median {self.shared_seconds_median:.2f} s "
            f"[{min(self.shared_seconds):.2f}-{max(self.shared_seconds):.2f}], speed-up {self.speedup:.2f}x "
            f"(ratio of medians; per repeat median {spread['median']:.2f}x [min {spread['min']:.2f}, max "
            f"{spread['max']:.2f}], n={self.repeats}) (max |score diff| {self.max_abs_score_difference:.2e})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

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
    plain_times: list[float] = []
    shared_times: list[float] = []
    max_diff = 0.0
    for _ in range(repeats):  # interleaved so that machine noise hits both paths alike
        start = time.perf_counter()
        plain = scorer.rank(user, history, items, share_prefix=False)
        plain_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        shared = scorer.rank(user, history, items, share_prefix=True)
        shared_times.append(time.perf_counter() - start)
        max_diff = max(max_diff, float(np.abs(plain - shared).max()))
    ratios = [p / q for p, q in zip(plain_times, shared_times, strict=True)]
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
        plain_seconds=plain_times,
        shared_seconds=shared_times,
        speedup_per_repeat={
            "median": float(np.median(ratios)),
            "min": min(ratios),
            "max": max(ratios),
        },
    )
