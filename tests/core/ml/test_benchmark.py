"""The unlearning benchmark's logic: data scaling and selection (pure pandas), the aims' verdicts (pure),
and one end-to-end run on the tiny random-init model (untrained: the figures are checked for being
consistent and complete, not for quality)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from core.ml import benchmark
from core.ml.benchmark import BenchConfig, BenchmarkError, BenchSizes
from core.ml.data import SampleConfig, prepare
from core.ml.model import LoraSpec
from core.ml.training import TrainConfig
from tests.conftest import synthetic_dataset

KEY = ["user_id", "item_id", "timestamp"]


@pytest.fixture(scope="module")
def data():
    return prepare(synthetic_dataset(users=20, items=20, per_user=10), SampleConfig(history_len=3))


def config(tiny_config, **values) -> BenchConfig:
    parent = TrainConfig(
        lora=LoraSpec(r=4, alpha=8), learning_rate=3e-2, batch_size=8, max_steps=8, valid_samples=16
    )
    fast = {m: {"learning_rate": 1e-2} for m in ("e2urec", "neggrad", "label_flip", "npo")}
    return BenchConfig(
        **{"model": tiny_config, "parent": parent, "method_configs": fast, "bootstrap_rounds": 50, **values}
    )


def keys(frame) -> set[tuple]:
    return set(map(tuple, frame[KEY].to_numpy().tolist()))


def test_bench_data_scales_partitions_and_keeps_forgotten_users_out_of_evaluation(tiny_config, data) -> None:
    cfg = config(tiny_config, sizes=BenchSizes(users=10, train_per_user=4, test_samples=6), forget_users=2)
    frames = benchmark.bench_data(data, cfg)
    train = data.split("train")
    assert frames.train["user_id"].nunique() == 10
    for user, own in frames.train.groupby("user_id"):  # each kept user's most recent samples
        latest = train[train["user_id"] == user].sort_values("timestamp").tail(4)
        assert keys(own) == keys(latest)
    assert len(frames.forget_users) == 2 and set(frames.forget["user_id"]) == set(frames.forget_users)
    assert keys(frames.forget) | keys(frames.retain) == keys(frames.train)
    assert not keys(frames.forget) & keys(frames.retain)
    for frame in (frames.test, frames.unseen, frames.retain):
        assert not set(frame["user_id"]) & set(frames.forget_users)
    assert len(frames.test) == 6 and set(frames.test["split"]) == {"test"}
    assert set(frames.unseen["split"]) <= {"valid", "test"}
    assert sorted(frames.unseen["label"]) == sorted(frames.forget["label"])  # same size, same label mix
    assert not keys(frames.test) & keys(frames.unseen)
    # the seed decides, and decides the same way twice
    again = benchmark.bench_data(data, cfg)
    assert again.forget_users == frames.forget_users and keys(again.unseen) == keys(frames.unseen)
    others = {
        tuple(benchmark.bench_data(data, config(tiny_config, seed=s, forget_users=2)).forget_users)
        for s in range(6)
    }
    assert len(others) > 1


def test_forget_fraction_gives_at_least_one_user(tiny_config, data) -> None:
    train = benchmark.scale_train(data.split("train"), BenchSizes(users=10), seed=0)
    assert len(benchmark.choose_forget_users(train, config(tiny_config))) == 1  # 5% of 10 rounds to 0
    assert len(benchmark.choose_forget_users(train, config(tiny_config, forget_fraction=0.3))) == 3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"forget_fraction": 0.0}, "forget_fraction"),
        ({"forget_fraction": 1.0}, "forget_fraction"),
        ({"forget_users": 0}, "forget_users"),
        ({"methods": ("e2urec", "neggrad")}, "must be among the methods"),
        ({"methods": ("retrain", "amnesia")}, "unknown method"),
        ({"parent_epochs": 0.0}, "parent_epochs"),
        ({"parent_evals": 0}, "parent_evals"),
    ],
)
def test_config_rejects_nonsense(tiny_config, values, message) -> None:
    with pytest.raises(BenchmarkError, match=message):
        config(tiny_config, **values)
    with pytest.raises(BenchmarkError, match="users"):
        BenchSizes(users=0)


def test_cannot_forget_every_user(tiny_config, data) -> None:
    with pytest.raises(BenchmarkError, match="nothing would be retained"):
        benchmark.bench_data(data, config(tiny_config, sizes=BenchSizes(users=3), forget_users=3))


def test_parent_recipe_counts_passes_over_the_training_split(tiny_config) -> None:
    recipe = benchmark.parent_recipe(config(tiny_config, parent_epochs=2.0), train_size=160)
    assert (recipe.max_steps, recipe.eval_every) == (40, 20)
    recipe = benchmark.parent_recipe(config(tiny_config, parent_epochs=4.0, parent_evals=4), train_size=80)
    assert (recipe.max_steps, recipe.eval_every) == (40, 10)
    quick = benchmark.quick_config(tiny_config)
    assert quick.setting == "quick" and quick.sizes.users is not None and quick.parent_epochs == 4.0


def _record(method: str, role: str, seconds: float, auc: float, jsd: float, mia: float) -> dict:
    return {
        "method": method,
        "role": role,
        "seconds": seconds,
        "test": {"auc": auc},
        "forget": {"jensen_shannon_to_retrain": jsd, "mia_auc": mia},
    }


def test_aims_are_judged_with_their_margins() -> None:
    records = [
        _record("parent", "before", 100.0, 0.70, 0.020, 0.62),
        _record("retrain", "exact", 100.0, 0.70, 0.0, 0.52),
        _record("e2urec", "approximate", 15.0, 0.695, 0.005, 0.55),
        _record("neggrad", "approximate", 10.0, 0.60, 0.030, 0.40),
    ]
    aims = benchmark.check_aims(records)
    assert [a["met"] for a in aims] == [True, True, True, True]
    assert aims[0]["margin"] == pytest.approx(0.05) and aims[1]["margin"] == pytest.approx(0.005)
    assert aims[2]["margin"] == pytest.approx(0.015) and aims[3]["margin"] == pytest.approx(0.07)
    worse = copy.deepcopy(records)
    worse[2].update(seconds=30.0, test={"auc": 0.68})
    worse[2]["forget"] = {"jensen_shannon_to_retrain": 0.025, "mia_auc": 0.35}
    missed = benchmark.check_aims(worse)
    assert [a["met"] for a in missed] == [False, False, False, False]
    assert missed[0]["margin"] == pytest.approx(-0.1) and missed[2]["margin"] == pytest.approx(-0.005)
    assert benchmark.check_aims(records[:2]) == []


def test_run_benchmark_end_to_end_on_the_tiny_model(tiny_config, data, tmp_path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_unlearning: threads only slow a tiny model on a shared CPU
    try:
        result = benchmark.run_benchmark(data, config(tiny_config, forget_users=2, parent_epochs=1.0))
    finally:
        torch.set_num_threads(before)
    records = {r["method"]: r for r in result["records"]}
    assert [r["method"] for r in result["records"]] == ["parent", *benchmark.DEFAULT_METHODS]
    assert records["parent"]["role"] == "before" and records["retrain"]["role"] == "exact"
    assert records["retrain"]["seconds_vs_retrain"] == 1.0
    assert records["retrain"]["forget"]["jensen_shannon_to_retrain"] == 0.0
    assert records["parent"]["forget"]["jensen_shannon_to_retrain"] > 0
    sizes = result["sizes"]
    for r in result["records"]:
        assert r["forget"]["gold_prob_before"] == records["parent"]["forget"]["gold_prob_after"]
        assert r["trainable_parameters"] == records["parent"]["trainable_parameters"] > 0
        assert r["seconds"] > 0 and r["peak_memory_bytes"] > 0
        low, high = r["test"]["auc_ci95"]
        assert r["test"]["samples"] == sizes["test"] and (
            np.isnan(r["test"]["auc"]) or low <= r["test"]["auc"] <= high
        )
        assert 0 <= r["forget"]["mia_auc"] <= 1 and r["forget"]["mia_samples_each"] == sizes["unseen"]
    assert records["e2urec"]["details"]["steps"]["augment"] >= 1  # the report's details travel along
    assert [a["met"] for a in result["aims"]] == [a["margin"] > 0 for a in result["aims"]]

    json_path, png_path = tmp_path / "out.json", tmp_path / "out.png"
    benchmark.save_json(result, json_path)
    benchmark.plot(result, png_path)
    loaded = json.loads(json_path.read_text())
    assert loaded["sizes"] == sizes and len(loaded["records"]) == 6
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 20_000
    table = benchmark.format_table(result)
    assert all(name in table for name in records) and table.count("MET") + table.count("MISSED") >= 4
