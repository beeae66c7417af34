"""Ranking speed: the prefix-shared path against plain scoring, for one user and N candidates, measured in
the same run (ratios, not absolute times, are what to compare across machines).  ``e2u bench ranking``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import Machine, spread
from core.ml.data import PreparedData
from core.ml.model import LoraSpec, ModelConfig, load_base, new_adapter
from core.ml.prompts import PromptBuilder, load_template
from core.ml.recommender import popular_unseen, user_history
from core.ml.scoring import Scorer
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
    speedup_per_repeat: dict[str, float] | None = None  # n, median, min, max of plain / shared per repeat
    # a second template ranked prefix-shared in the same repeats (``--compare-prompt``): its file, its
    # seconds, plain / its seconds per repeat, and the tokens each path reads per candidate
    compare_prompt: str | None = None
    compare_seconds: list[float] | None = None
    compare_speedup_per_repeat: dict[str, float] | None = None
    tokens_per_candidate: dict[str, dict[str, float]] | None = None
    # the user's prefix pass with one candidate, timed in the same repeats: the most a per-user cache of the
    # prefix state could save, as a share of the prefix-shared ranking (median, min, max per repeat)
    prefix_seconds: list[float] | None = None
    prefix_share_per_repeat: dict[str, float] | None = None
    rank_batch_size: int | None = None  # candidate rows per forward call of the prefix-shared path
    # suffix positions one prefix-shared ranking reads at ``rank_batch_size``: the real tokens, and with
    # the chunks padded in request order and in order of length (what ``Scorer.rank_encoded`` does)
    suffix_positions: dict[str, int] | None = None
    # ``--rank-batch-sizes``: the prefix-shared path's seconds per repeat at each chunk size, interleaved
    shared_seconds_by_rank_batch_size: dict[str, list[float]] | None = None

    def summary(self) -> str:
        each = self.speedup_per_repeat
        if each is None or self.plain_seconds is None or self.shared_seconds is None:
            return (
                f"{self.candidates} candidates, {self.base}: plain {self.plain_seconds_median:.2f} s, "
                f"prefix-shared {self.shared_seconds_median:.2f} s, speed-up {self.speedup:.2f}x"
            )
        return (
            f"{self.candidates} candidates, {self.base} on {self.device}, {self.repeats} interleaved "
            f"repeats: plain median {self.plain_seconds_median:.2f} s [{min(self.plain_seconds):.2f}-"
            f"{max(self.plain_seconds):.2f}], prefix-shared median {self.shared_seconds_median:.2f} s "
            f"[{min(self.shared_seconds):.2f}-{max(self.shared_seconds):.2f}], speed-up {self.speedup:.2f}x "
            f"(ratio of medians; per repeat median {each['median']:.2f}x [min {each['min']:.2f}, max "
            f"{each['max']:.2f}], n={self.repeats}) (max |score diff| {self.max_abs_score_difference:.2e})"
            + self._compare_summary()
            + self._prefix_summary()
            + self._chunk_summary()
        )

    def _chunk_summary(self) -> str:
        parts = []
        if self.suffix_positions is not None:
            parts.append(f"; suffix positions read {self.suffix_positions}")
        for size, seconds in (self.shared_seconds_by_rank_batch_size or {}).items():
            parts.append(
                f"; {size} rows per chunk: median {float(np.median(seconds)):.2f} s "
                f"[{min(seconds):.2f}-{max(seconds):.2f}]"
            )
        return "".join(parts)

    def _prefix_summary(self) -> str:
        if self.prefix_share_per_repeat is None:
            return ""
        each = self.prefix_share_per_repeat
        return (
            f"; the prefix pass (+1 candidate) is {each['median']:.1%} of a prefix-shared ranking per "
            f"repeat [min {each['min']:.1%}, max {each['max']:.1%}]: the ceiling of a prefix-state cache"
        )

    def _compare_summary(self) -> str:
        if self.compare_seconds is None or self.compare_speedup_per_repeat is None:
            return ""
        each = self.compare_speedup_per_repeat
        median = float(np.median(self.compare_seconds))
        return (
            f"; prefix-shared with {self.compare_prompt}: median {median:.2f} s "
            f"[{min(self.compare_seconds):.2f}-{max(self.compare_seconds):.2f}], plain / it per repeat "
            f"median {each['median']:.2f}x [min {each['min']:.2f}, max {each['max']:.2f}]; tokens per "
            f"candidate {self.tokens_per_candidate}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RankingResult:
        return cls(**raw)


def _tokens_per_candidate(scorer: Scorer, user: str, history: Any, items: list[str]) -> dict[str, float]:
    work = scorer.encode_ranking(scorer.builder, user, history, items)
    shared = sum(len(s) for s in work.suffixes) / len(items)
    return {"plain": len(work.prefix) + shared, "shared": shared}


def _suffix_positions(scorer: Scorer, user: str, history: Any, items: list[str]) -> dict[str, int]:
    lengths = [len(s) for s in scorer.encode_ranking(scorer.builder, user, history, items).suffixes]
    size = scorer.rank_batch_size

    def padded(order: list[int]) -> int:
        chunks = [order[k : k + size] for k in range(0, len(order), size)]
        return sum(len(chunk) * max(lengths[j] for j in chunk) for chunk in chunks)

    by_length = sorted(range(len(lengths)), key=lambda j: lengths[j])
    return {
        "real": sum(lengths),
        "request_order": padded(list(range(len(lengths)))),
        "sorted": padded(by_length),
    }


def measure(
    model: ModelConfig,
    data: PreparedData,
    user: str,
    candidates: int,
    repeats: int,
    compare_prompt: Path | None = None,
    rank_batch_sizes: Sequence[int] = (),
) -> RankingResult:
    """Rank ``candidates`` popular items ``user`` has not rated, both ways, ``repeats`` times each, with a
    fresh (untrained) LoRA adapter on ``model``.  With ``compare_prompt`` (a TOML template), each repeat
    also ranks prefix-shared with that template: what a different wording (e.g. a shorter suffix) buys,
    measured against the same plain runs.  Speed does not depend on the adapter's weights, so an untrained
    one measures it; whether the wording ranks as well needs an adapter trained on it.  Each of
    ``rank_batch_sizes`` also times the prefix-shared path at that chunk size, in the same repeats."""
    loaded = load_base(model)
    new_adapter(loaded, LoraSpec(), "bench", seed=0)
    scorer = scorer_for(loaded, data)
    other = (
        Scorer(loaded, PromptBuilder(loaded.tokenizer, scorer.builder.catalog, load_template(compare_prompt)))
        if compare_prompt is not None
        else None
    )
    history = user_history(data.samples, user, data.config.history_len)
    items = popular_unseen(data.samples, user, candidates)
    scorer.rank(user, history, items[:4], share_prefix=True)  # warm-up
    plain_times: list[float] = []
    shared_times: list[float] = []
    other_times: list[float] = []
    prefix_times: list[float] = []
    by_size: dict[str, list[float]] = {str(size): [] for size in rank_batch_sizes}
    default_size = scorer.rank_batch_size
    prefix_only = scorer.encode_ranking(scorer.builder, user, history, items[:1])
    max_diff = 0.0
    for _ in range(repeats):  # interleaved so that machine noise hits every path alike
        start = time.perf_counter()
        plain = scorer.rank(user, history, items, share_prefix=False)
        plain_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        shared = scorer.rank(user, history, items, share_prefix=True)
        shared_times.append(time.perf_counter() - start)
        max_diff = max(max_diff, float(np.abs(plain - shared).max()))
        if other is not None:
            start = time.perf_counter()
            other.rank(user, history, items, share_prefix=True)
            other_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        scorer.rank_encoded([prefix_only])
        prefix_times.append(time.perf_counter() - start)
        for size in rank_batch_sizes:
            scorer.rank_batch_size = size
            start = time.perf_counter()
            scorer.rank(user, history, items, share_prefix=True)
            by_size[str(size)].append(time.perf_counter() - start)
        scorer.rank_batch_size = default_size
    ratios = [p / q for p, q in zip(plain_times, shared_times, strict=True)]
    deployed = "builtin" if model.prompt_file is None else "configured"
    tokens = {deployed: _tokens_per_candidate(scorer, user, history, items)}
    if other is not None:
        tokens["compare"] = _tokens_per_candidate(other, user, history, items)
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
        speedup_per_repeat=spread(ratios),
        compare_prompt=str(compare_prompt) if compare_prompt is not None else None,
        compare_seconds=other_times or None,
        compare_speedup_per_repeat=(
            spread([p / q for p, q in zip(plain_times, other_times, strict=True)]) if other_times else None
        ),
        tokens_per_candidate=tokens,
        prefix_seconds=prefix_times,
        rank_batch_size=scorer.rank_batch_size,
        suffix_positions=_suffix_positions(scorer, user, history, items),
        shared_seconds_by_rank_batch_size=by_size or None,
        prefix_share_per_repeat=spread([p / q for p, q in zip(prefix_times, shared_times, strict=True)]),
    )
