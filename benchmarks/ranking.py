"""Ranking speed: the prefix-shared path against plain scoring, for one user and N candidates, measured in
the same run (ratios, not absolute times, are what to compare across machines).

    python -m benchmarks.ranking [--base smollm2] [--candidates 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from core.ml.data import load_prepared
from core.ml.model import LoraSpec, ModelConfig, load_base, new_adapter
from core.ml.recommender import popular_unseen, user_history
from core.ml.workflows import scorer_for


def measure(
    base: str, candidates: int, repeats: int, data_dir: Path, cache_dir: str, user: str
) -> dict[str, object]:
    data = load_prepared(data_dir)
    loaded = load_base(ModelConfig(base=base, cache_dir=cache_dir))
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
    return {
        "base": base,
        "candidates": len(items),
        "repeats": repeats,
        "plain_seconds_median": float(np.median(plain_times)),
        "shared_seconds_median": float(np.median(shared_times)),
        "speedup": float(np.median(plain_times) / np.median(shared_times)),
        "max_abs_score_difference": max_diff,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}",
        "device": str(loaded.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="smollm2")
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--user", default="1")
    parser.add_argument("--data-dir", type=Path, default=Path("var/data/default"))
    parser.add_argument("--cache-dir", default="var/models")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.base, args.candidates, args.repeats, args.data_dir, args.cache_dir, args.user)
    print(
        f"{result['candidates']} candidates, {args.base} on {result['device']}: plain "
        f"{result['plain_seconds_median']:.2f} s, prefix-shared {result['shared_seconds_median']:.2f} s, "
        f"speed-up {result['speedup']:.2f}x (max |score diff| {result['max_abs_score_difference']:.2e})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
