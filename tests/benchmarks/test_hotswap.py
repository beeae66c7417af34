"""The hot-swap benchmark: its windows and figures on made-up answers (fast), and one small real run
(slow: the API under load, one promotion per channel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import hotswap
from benchmarks.hotswap import Answer, HotswapConfig, HotswapResult, Load, measure_swap
from core.ml.model import ModelConfig


def _load_with(answers: list[Answer]) -> Load:
    load = Load("http://unused", "key", ["u1"], clients=1)
    load.answers = answers
    return load


def test_swap_windows_split_answers_at_the_promotion() -> None:
    committed = 100.0
    # the steady window is as long as the swap's: confirmation 0.15 s + settle 0.5 s before the promotion
    answers = [Answer(98.0, 2.0, "200", "v1")]  # earlier: left out
    answers += [Answer(99.4 + 0.1 * n, 0.05, "200", "v1") for n in range(6)]
    answers += [
        Answer(100.05, 0.40, "200", "v1"),  # waited for the swap
        Answer(100.10, 0.08, "503", None),
        Answer(100.20, 0.05, "200", "v2"),
        Answer(101.00, 0.05, "200", "v2"),  # past the window
    ]
    swap = measure_swap(_load_with(answers), "stamp", 0, "v2", committed, 0.15)
    assert (len(swap.before_ms), len(swap.during_ms)) == (6, 3)
    assert swap.p99_before_ms == pytest.approx(50.0) and swap.p99_during_ms == pytest.approx(400.0)
    assert swap.failed == 1
    assert swap.first_answer_seconds == pytest.approx(0.25)
    result = HotswapResult("cmd", "date", "machine", "tiny", 1, 5.0, 0.05, ["stamp"], "none", [swap])
    summary = result.to_dict()["summary"]["stamp"]
    assert summary["p99_during_over_before"] == pytest.approx(8.0)
    assert summary["per_swap_p99_ratio"]["median"] == pytest.approx(8.0)
    assert summary["confirmed_seconds"] == {"n": 1, "median": 0.15, "min": 0.15, "max": 0.15}


@pytest.mark.slow
def test_a_small_run_switches_every_channel_without_failures(
    tiny_config: ModelConfig, tmp_path: Path
) -> None:
    model = ModelConfig(base="tiny", cache_dir=tiny_config.cache_dir, device="cpu")
    config = HotswapConfig(rounds=1, clients=2, poll_seconds=1.0, memory_cycles=1)
    result = hotswap.run(model, config, "test", lambda _: None)
    assert [s.channel for s in result.swaps] == result.channels and "stamp" in result.channels
    assert all(s.confirmed_seconds is not None for s in result.swaps)
    assert result.requests > 0 and set(result.statuses) == {"200"}
    assert result.memory is not None and len(result.memory["two_adapters_mib"]) == 1
