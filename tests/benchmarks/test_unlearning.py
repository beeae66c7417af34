"""The unlearning benchmark's logic: data scaling and selection (pure pandas), the figures of one record
from known predictions, the aims' verdicts (pure), and one end-to-end run on the tiny random-init model
(untrained: the figures are checked for being defined, consistent and complete, not for quality)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import report, unlearning
from benchmarks.unlearning import data as bench
from benchmarks.unlearning.config import BenchConfig, BenchmarkError, BenchSizes
from benchmarks.unlearning.records import ForgetFigures, MethodRecord, Role, UnlearningResult
from benchmarks.unlearning.run import Predictions, check_aims, parent_recipe, record_for, run_benchmark
from core.ml import metrics
from core.ml.data import SampleConfig, prepare
from core.ml.evaluation import Evaluation
from core.ml.model import LoraSpec
from core.ml.training import TrainConfig
from core.ml.unlearning import UnlearningReport
from tests.conftest import synthetic_dataset

KEY = ["user_id", "item_id", "timestamp"]


@pytest.fixture(scope="module")
def data():
    # no user held out of training: the benchmark draws its unseen samples from valid/test, and the
    # sizes asserted below are those of 20 users' splits
    config = SampleConfig(history_len=3, holdout_user_fraction=0.0)
    return prepare(synthetic_dataset(users=20, items=20, per_user=10), config)


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
    frames = bench.bench_data(data, cfg)
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
    again = bench.bench_data(data, cfg)
    assert again.forget_users == frames.forget_users and keys(again.unseen) == keys(frames.unseen)
    others = {
        tuple(bench.bench_data(data, config(tiny_config, seed=s, forget_users=2)).forget_users)
        for s in range(6)
    }
    assert len(others) > 1


def test_forget_fraction_gives_at_least_one_user(tiny_config, data) -> None:
    train = bench.scale_train(data.split("train"), BenchSizes(users=10), seed=0)
    assert len(bench.choose_forget_users(train, config(tiny_config))) == 1  # 5% of 10 rounds to 0
    assert len(bench.choose_forget_users(train, config(tiny_config, forget_fraction=0.3))) == 3


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
        bench.bench_data(data, config(tiny_config, sizes=BenchSizes(users=3), forget_users=3))


def test_parent_recipe_counts_passes_over_the_training_split(tiny_config) -> None:
    recipe = parent_recipe(config(tiny_config, parent_epochs=2.0), train_size=160)
    assert (recipe.max_steps, recipe.eval_every) == (40, 20)
    recipe = parent_recipe(config(tiny_config, parent_epochs=4.0, parent_evals=4), train_size=80)
    assert (recipe.max_steps, recipe.eval_every) == (40, 10)
    quick = unlearning.quick_config(tiny_config)
    assert quick.setting == "quick" and quick.sizes.users is not None and quick.parent_epochs == 4.0


def _frames(forget_labels: list[int], unseen_labels: list[int], test_labels: list[int]) -> bench.BenchData:
    def frame(labels: list[int], user: str) -> pd.DataFrame:
        return pd.DataFrame({"user_id": user, "label": labels})

    forget = frame(forget_labels, "gone")
    return bench.BenchData(
        train=forget,
        forget=forget,
        retain=frame([], "kept"),
        valid=frame([], "kept"),
        test=frame(test_labels, "kept"),
        unseen=frame(unseen_labels, "kept"),
        forget_users=["gone"],
    )


def _run(method: str, seconds: float) -> UnlearningReport:
    return UnlearningReport(method, {"seed": 0}, seconds, 3, 10, 2**20, {"note": method})


def test_a_record_holds_the_figures_of_known_predictions(tiny_config) -> None:
    labels = [1, 0, 1, 0]
    frames = _frames(labels, labels, [1, 1, 0, 0])
    confident = np.array([0.9, 0.1, 0.9, 0.1])  # gold P 0.9 on every sample
    unsure = np.full(4, 0.5)
    predictions = {  # the parent remembers F (low loss there, not on unseen data); Retrain does not
        "parent": Predictions(test=np.array([0.8, 0.6, 0.4, 0.2]), forget=confident, unseen=unsure),
        "retrain": Predictions(test=np.array([0.2, 0.4, 0.6, 0.8]), forget=unsure, unseen=unsure),
    }
    runs = {"parent": _run("parent", 20.0), "retrain": _run("retrain", 10.0)}
    cfg = config(tiny_config, bootstrap_rounds=20)
    parent, retrain = (record_for(name, runs, predictions, frames, cfg) for name in runs)

    assert (parent.role, retrain.role) == (Role.BEFORE, Role.EXACT)
    assert (parent.seconds_vs_retrain, retrain.seconds_vs_retrain) == (2.0, 1.0)
    assert (parent.test.auc, retrain.test.auc) == (1.0, 0.0) and parent.test.samples == 4
    assert parent.forget.mia_auc == 1.0 and retrain.forget.mia_auc == 0.5  # all ties: chance
    assert parent.forget.mia_samples_each == 4 and parent.forget.samples == 4
    assert parent.forget.gold_prob_before == pytest.approx(0.9) == parent.forget.gold_prob_after
    assert retrain.forget.gold_prob_before == pytest.approx(0.9)
    assert retrain.forget.gold_prob_after == pytest.approx(0.5) == retrain.forget.unseen_gold_prob
    assert retrain.forget.to_retrain == {"jensen_shannon": 0.0, "symmetric_kl": 0.0}
    assert parent.forget.to_retrain == {
        "jensen_shannon": pytest.approx(metrics.jensen_shannon(confident, unsure)),
        "symmetric_kl": pytest.approx(metrics.symmetric_kl(confident, unsure)),
    }
    assert parent.forget.to_retrain["jensen_shannon"] > 0.1
    assert (retrain.config, retrain.steps, retrain.details) == ({"seed": 0}, 3, {"note": "retrain"})


def _record(method: str, role: str, seconds: float, auc: float, jsd: float, mia: float) -> MethodRecord:
    forget = ForgetFigures(4, 0.5, 0.5, 0.5, 4, mia, (0.0, 1.0), {"jensen_shannon": jsd, "symmetric_kl": jsd})
    test = Evaluation(method, 10, auc, (auc - 0.1, auc + 0.1), 0.69, 0.5)
    return MethodRecord(method, Role(role), {}, seconds, 1, 8, 2**20, {}, test, forget)


def test_aims_are_judged_with_their_margins() -> None:
    records = [
        _record("parent", "before", 100.0, 0.70, 0.020, 0.62),
        _record("retrain", "exact", 100.0, 0.70, 0.0, 0.52),
        _record("e2urec", "approximate", 15.0, 0.695, 0.005, 0.55),
        _record("neggrad", "approximate", 10.0, 0.60, 0.030, 0.40),
    ]
    aims = check_aims(records)
    assert [a.met for a in aims] == [True, True, True, True]
    assert aims[0].margin == pytest.approx(0.05) and aims[1].margin == pytest.approx(0.005)
    assert aims[2].margin == pytest.approx(0.015) and aims[3].margin == pytest.approx(0.07)
    assert aims[2].target == "< 0.02 (parent)"
    worse = list(records)
    worse[2] = _record("e2urec", "approximate", 30.0, 0.68, 0.025, 0.35)
    missed = check_aims(worse)
    assert [a.met for a in missed] == [False, False, False, False]
    assert missed[0].margin == pytest.approx(-0.1) and missed[2].margin == pytest.approx(-0.005)
    assert check_aims(records[:2]) == []


def test_run_benchmark_end_to_end_on_the_tiny_model(tiny_config, data, tmp_path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_unlearning: threads only slow a tiny model on a shared CPU
    try:
        result = run_benchmark(data, config(tiny_config, forget_users=2, parent_epochs=1.0))
    finally:
        torch.set_num_threads(before)
    records = {r.method: r for r in result.records}
    parent, retrain = records["parent"], records["retrain"]
    assert [r.method for r in result.records] == ["parent", *unlearning.DEFAULT_METHODS]
    assert [r.role for r in result.records] == [Role.BEFORE, Role.EXACT, *[Role.APPROXIMATE] * 4]
    assert retrain.forget.to_retrain == {"jensen_shannon": 0.0, "symmetric_kl": 0.0}
    assert parent.forget.gold_prob_after == parent.forget.gold_prob_before
    sizes = result.sizes
    assert sizes.forget_users == 2 and sizes.forget + sizes.retain == sizes.train
    assert sizes.unseen == sizes.forget  # label-matched, same size
    for r in result.records:
        assert r.seconds_vs_retrain == pytest.approx(r.seconds / retrain.seconds)
        assert r.forget.gold_prob_before == parent.forget.gold_prob_after
        assert r.trainable_parameters == parent.trainable_parameters > 0 and r.steps >= 1
        assert r.peak_memory_bytes == r.details["memory"]["peak_bytes"]  # the meter's figure travels
        low, high = r.test.auc_ci95  # defined: the test sample holds both labels
        assert r.test.samples == sizes.test and 0 <= low <= r.test.auc <= high <= 1
        assert r.forget.mia_samples_each == sizes.unseen
        low, high = r.forget.mia_auc_ci95
        assert math.isfinite(low) and math.isfinite(high) and math.isfinite(r.forget.mia_auc)
        # n members against n unseen samples: the AUC is a count of pairs (ties count half) over n * n
        pairs = r.forget.mia_auc * 2 * sizes.unseen**2
        assert pairs == pytest.approx(round(pairs))
        if r.role != Role.BEFORE:  # every method left a model that differs from the parent on F
            assert r.forget.gold_prob_after != parent.forget.gold_prob_after
        if r.role == Role.APPROXIMATE:
            assert r.forget.to_retrain["jensen_shannon"] > 0
    assert parent.forget.to_retrain["jensen_shannon"] > 0
    assert records["e2urec"].details["steps"]["augment"] >= 1  # the report's details travel along
    assert len(result.aims) == 4 and [a.met for a in result.aims] == [a.margin > 0 for a in result.aims]

    json_path, png_path = tmp_path / "out.json", tmp_path / "out.png"
    report.save_json(result.to_dict(), json_path)
    unlearning.plot(result, png_path)
    loaded = json.loads(json_path.read_text())
    assert loaded["sizes"] == dataclasses.asdict(sizes) and len(loaded["records"]) == 6
    assert json.loads(report.to_json(UnlearningResult.from_dict(loaded).to_dict())) == loaded
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 20_000
    table = unlearning.format_table(result).splitlines()
    assert [line.split()[0] for line in table[2:8]] == [r.method for r in result.records]
    assert sum(line.startswith(("MET ", "MISSED ")) for line in table) == 4
