"""The canary benchmark's pieces: the planted data, the Clopper-Pearson rates, the summary, and one tiny
run end to end through the service's verifier."""

from __future__ import annotations

from dataclasses import replace

import pytest
from scipy import stats

from benchmarks.canaries import (
    CanaryConfig,
    CanaryRecord,
    Rate,
    canary_data,
    membership_auc,
    run_canaries,
    summarise,
)
from core.ml.data import holdout_users
from core.ml.model import ModelConfig
from core.ml.training import TrainConfig

TINY = ModelConfig(base="tiny", device="cpu")


def test_clopper_pearson_rates_match_the_exact_binomial_interval() -> None:
    for hits, n in ((0, 10), (3, 10), (10, 10), (7, 16)):
        rate = Rate.of(hits, n, 0.05)
        exact = stats.binomtest(hits, n).proportion_ci(0.95, method="exact")
        assert (rate.low, rate.high) == pytest.approx((exact.low, exact.high))
        assert rate.rate == hits / n
    assert Rate.of(0, 10, 0.05).high == pytest.approx(1 - 0.025 ** (1 / 10))


def test_half_the_canaries_are_planted_and_the_others_never_reach_training() -> None:
    config = CanaryConfig(model=TINY, canaries=16, population=40, copies=2)
    frames = canary_data(config)
    users = frames.data.samples["user_id"]
    assert not holdout_users(users, config.holdout_fraction) & set(frames.canaries)
    assert 0 < sum(frames.planted.values()) < len(frames.planted)
    counts = frames.train["user_id"].value_counts()
    for canary, planted in frames.planted.items():
        assert len(frames.canaries[canary]) == config.items
        assert counts.get(canary, 0) == (config.items * (1 + config.copies) if planted else 0)
        retain = frames.retain_without(canary)
        assert canary not in set(retain["user_id"])
        others = {c for c, p in frames.planted.items() if p and c != canary}
        assert others <= set(retain["user_id"]) and retain["user_id"].isin(others).sum() == 20 * len(others)
    # each canary has a taste of its own, and no two the same
    tastes = {tuple(sorted(zip(f["item_id"], f["label"], strict=True))) for f in frames.canaries.values()}
    assert len(tastes) == len(frames.canaries)


def _record(canary: str, planted: bool, parent_p: float, child_p: float, verdict: str) -> CanaryRecord:
    return CanaryRecord(canary, "m", planted, 20, parent_p, 0.1, child_p, 0.5, 0.0, verdict, [], 2.0, 1.0)


def test_summary_reads_power_false_positives_and_the_leakage_bound_off_the_records() -> None:
    records = [_record(f"p{k}", True, 0.001, 0.01 if k < 6 else 0.5, "failed") for k in range(8)]
    records += [_record(f"n{k}", False, 0.5 if k else 0.01, 0.6, "no_prior_signal") for k in range(8)]
    summary = summarise(records, 0.05)["m/matched"]
    assert summary["power"]["hits"] == 8 and summary["power"]["n"] == 8
    assert summary["false_positive_rate"]["hits"] == 1
    planted_child = summary["planted"]["child_memorised"]
    assert planted_child["hits"] == 6 and summary["leakage_lower_bound"] == planted_child["low"] > 0.3
    assert summary["advantage_low"] == max(
        0.0, planted_child["low"] - summary["not_planted"]["child_memorised"]["high"]
    )
    assert summary["planted"]["verdicts"] == {"failed": 8}
    assert summary["not_planted"]["verdicts"] == {"no_prior_signal": 8}


def test_a_tiny_run_erases_every_canary_through_the_verifier(tiny_config) -> None:
    recipe = TrainConfig(learning_rate=1e-2, batch_size=8, max_steps=4, eval_every=4, valid_samples=16)
    config = CanaryConfig(
        model=tiny_config, canaries=4, population=20, copies=1, recipe=recipe, seed=1, score_batch_size=32
    )
    result = run_canaries(config)
    assert [r.canary for r in result.records][::2] == sorted(result.planted)
    assert {r.planted for r in result.records} == {True, False}
    for record in result.records:
        assert record.verdict in ("forgotten", "no_prior_signal", "inconclusive", "failed")
        assert 0 <= record.parent_p <= 1 and record.reasons and record.verify_seconds > 0
    assert {r.reference for r in result.records} == {"matched", "population"}  # both, same children
    for reference in ("matched", "population"):
        summary = result.summary[f"e2urec/{reference}"]
        assert summary["planted"]["canaries"] + summary["not_planted"]["canaries"] == 4
    assert result.to_dict()["records"][0]["canary"] == result.records[0].canary


def test_membership_auc_separates_planted_canaries_by_their_excess() -> None:
    planted = [replace(_record(f"p{k}", True, 0.5, 0.5, "failed"), child_excess=0.2 + k) for k in range(6)]
    absent = [replace(_record(f"n{k}", False, 0.5, 0.5, "failed"), child_excess=-0.2 - k) for k in range(6)]
    auc = membership_auc(planted + absent, child=True, alpha=0.05)
    assert auc == {"value": 1.0, "low": 1.0, "high": 1.0}
    tied = membership_auc(planted + absent, child=False, alpha=0.05)  # the parent's excess is 0.1 for all
    assert tied["value"] == 0.5 and tied["low"] <= 0.5 <= tied["high"]
