"""``e2u bench ...`` end to end on the tiny random-init model (untrained: checks what each command writes
and refuses, not the figures' quality)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from app.cli import app
from benchmarks.cli import bench_app
from benchmarks.prefilter import PrefilterResult
from benchmarks.ranking import RankingResult
from benchmarks.recommender import RecommenderResult
from benchmarks.throughput import short_title
from core.ml.data import SampleConfig, prepare, save_prepared
from core.ml.model import adapter_sha256
from tests.conftest import MODELS_DIR, synthetic_dataset


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    save_prepared(
        prepare(synthetic_dataset(users=16, items=20, per_user=8), SampleConfig(history_len=3)),
        tmp_path / "data" / "default",
    )
    (tmp_path / "models").symlink_to(MODELS_DIR)  # converted models are shared, not rebuilt
    monkeypatch.setenv("E2U_HOME", str(tmp_path))
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # production needs a signing key file and salt
    threads = torch.get_num_threads()  # --threads sets it for the whole process
    yield tmp_path
    torch.set_num_threads(threads)


def test_e2u_mounts_the_benchmarks() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ("ranking", "recommender", "unlearning"))


def test_bench_unlearning_writes_json_png_and_a_table(home: Path) -> None:
    out = home / "results" / "run.json"
    options = [
        "--base",
        "tiny",
        "--threads",
        "1",
        "--single-user",
        "--users",
        "8",
        "--train-per-user",
        "4",
        "--test-samples",
        "12",
        "--methods",
        "retrain,e2urec",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, ["bench", "unlearning", *options])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert [r["method"] for r in record["records"]] == ["parent", "retrain", "e2urec"]
    assert record["sizes"]["users"] == 8 and record["sizes"]["forget_users"] == 1
    assert record["sizes"]["train"] <= 32 and record["setting"] == "full"
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "e2urec" in result.output and "wall time <= 20% of Retrain's" in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--forget-users", "2", "--forget-fraction", "0.1"], "not both"),
        (["--single-user", "--forget-users", "3"], "means --forget-users 1"),
        (["--methods", "e2urec"], "must be among the methods"),
    ],
)
def test_bench_unlearning_refuses_contradictory_options(home: Path, options: list[str], message: str) -> None:
    result = CliRunner().invoke(bench_app, ["unlearning", "--base", "tiny", *options])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_bench_ranking_compares_both_paths(home: Path) -> None:
    out = home / "results" / "ranking.json"
    options = ["--base", "tiny", "--threads", "1", "--candidates", "6", "--repeats", "1", "--out", str(out)]
    result = CliRunner().invoke(bench_app, ["ranking", *options])
    assert result.exit_code == 0, result.output
    ranking = RankingResult.from_dict(json.loads(out.read_text()))
    assert (ranking.base, ranking.candidates, ranking.repeats) == ("tiny", 6, 1)
    assert ranking.max_abs_score_difference < 1e-4  # the two paths score alike
    assert ranking.speedup == pytest.approx(ranking.plain_seconds_median / ranking.shared_seconds_median)
    assert ranking.plain_seconds is not None and ranking.shared_seconds is not None
    assert len(ranking.plain_seconds) == len(ranking.shared_seconds) == 1  # each repeat's own seconds
    ratio = ranking.plain_seconds[0] / ranking.shared_seconds[0]
    assert ranking.speedup_per_repeat == pytest.approx({"n": 1, "median": ratio, "min": ratio, "max": ratio})
    assert "speed-up" in result.output
    assert ranking.prefix_seconds is not None and ranking.prefix_share_per_repeat is not None
    share = ranking.prefix_seconds[0] / ranking.shared_seconds[0]
    assert ranking.prefix_share_per_repeat["median"] == pytest.approx(share)
    assert ranking.compare_seconds is None  # no --compare-prompt
    positions = ranking.suffix_positions
    assert positions is not None and positions["real"] <= positions["sorted"] <= positions["request_order"]


def test_bench_ranking_times_each_chunk_size_asked(home: Path) -> None:
    out = home / "results" / "ranking.json"
    options = ["--base", "tiny", "--threads", "1", "--candidates", "6", "--repeats", "2", "--out", str(out)]
    result = CliRunner().invoke(bench_app, ["ranking", *options, "--rank-batch-sizes", "2,4"])
    assert result.exit_code == 0, result.output
    ranking = RankingResult.from_dict(json.loads(out.read_text()))
    by_size = ranking.shared_seconds_by_rank_batch_size
    assert by_size is not None and set(by_size) == {"2", "4"} and all(len(v) == 2 for v in by_size.values())
    assert ranking.rank_batch_size == 32  # the scorer's default is put back after the sizes asked
    assert "2 rows per chunk" in result.output


def test_bench_ranking_times_a_second_wording_with_a_shorter_suffix(home: Path) -> None:
    out = home / "results" / "ranking.json"
    title_last = Path(__file__).parents[2] / "benchmarks" / "prompts" / "title-last.toml"
    options = ["--base", "tiny", "--threads", "1", "--candidates", "6", "--repeats", "2", "--out", str(out)]
    result = CliRunner().invoke(bench_app, ["ranking", *options, "--compare-prompt", str(title_last)])
    assert result.exit_code == 0, result.output
    ranking = RankingResult.from_dict(json.loads(out.read_text()))
    assert ranking.compare_prompt == str(title_last)
    assert ranking.compare_seconds is not None and len(ranking.compare_seconds) == 2
    assert ranking.plain_seconds is not None and ranking.compare_speedup_per_repeat is not None
    ratios = [p / q for p, q in zip(ranking.plain_seconds, ranking.compare_seconds, strict=True)]
    assert ranking.compare_speedup_per_repeat["max"] == pytest.approx(max(ratios))
    tokens = ranking.tokens_per_candidate
    assert tokens is not None and set(tokens) == {"builtin", "compare"}
    # the title-last wording leaves fewer tokens after the title: a shorter suffix per candidate
    assert tokens["compare"]["shared"] < tokens["builtin"]["shared"]
    assert tokens["builtin"]["plain"] > tokens["builtin"]["shared"]


def test_bench_recommender_writes_a_learning_curve_and_the_adapter(home: Path) -> None:
    out = home / "results" / "recommender.json"
    options = ["--base", "tiny", "--threads", "1", "--max-steps", "4", "--curve-every", "2"]
    options += ["--batch-size", "4", "--test-samples", "8", "--valid-samples", "8", "--out", str(out)]
    result = CliRunner().invoke(bench_app, ["recommender", *options])
    assert result.exit_code == 0, result.output
    recorded = RecommenderResult.from_dict(json.loads(out.read_text()))
    assert [p.step for p in recorded.curve] == [0, 2, 4] and recorded.test_subset == 8
    assert [p.train_samples for p in recorded.curve] == [0, 8, 16]
    assert [r.name for r in recorded.references_on_subset] == ["item_mean_rating", "item_popularity"]
    assert recorded.train_result.steps == 4 and recorded.command.startswith("e2u bench recommender")
    assert adapter_sha256(home / "adapters" / "v1") == recorded.adapter_sha256  # the adapter is saved
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_bench_throughput_measures_every_lever_against_the_baseline(home: Path) -> None:
    out = home / "throughput.json"
    options = ["--base", "tiny", "--samples", "16", "--repeats", "2", "--top-layers", "1", "--out", str(out)]
    result = CliRunner().invoke(bench_app, ["throughput", *options])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    variants = {v["variant"]["name"]: v for v in record["variants"]}
    assert next(iter(variants)) == "baseline" and "top_1_layers" in variants and len(variants) == 8
    assert variants["baseline"]["ratio_to_baseline"] == [1.0, 1.0] and record["clock"] == "process CPU time"
    for v in variants.values():
        assert len(v["samples_per_second"]) == len(v["wall_samples_per_second"]) == 2
        assert all(x > 0 for x in v["samples_per_second"] + v["wall_samples_per_second"])
        assert v["samples_measured"] == 32 and v["ratio_min"] <= v["ratio_median"] <= v["ratio_max"]
    base = variants["baseline"]
    # the synthetic data keeps 3 history items, so history_3 changes nothing; ranks and layers do
    assert variants["history_3"]["tokens_per_sample"] == base["tokens_per_sample"]
    assert variants["rank_16"]["trainable_parameters"] == 2 * base["trainable_parameters"]
    assert variants["top_1_layers"]["trainable_parameters"] == base["trainable_parameters"] // 2
    assert variants["all_linear_r8"]["trainable_parameters"] > base["trainable_parameters"]
    assert "baseline" in result.output and f"wrote {out}" in result.output


def test_bench_throughput_refuses_a_sample_count_that_splits_a_batch(home: Path) -> None:
    result = CliRunner().invoke(bench_app, ["throughput", "--base", "tiny", "--samples", "12"])
    assert result.exit_code == 2 and "multiple of every variant's batch size" in result.output


def test_short_titles_drop_only_a_trailing_year() -> None:
    assert short_title("Toy Story (1995)") == "Toy Story"
    assert short_title("City of Lost Children, The (1995)") == "City of Lost Children, The"
    assert short_title("Movie 3") == "Movie 3" and short_title("(1995)") == "(1995)"


def test_bench_prefilter_measures_the_reach_of_each_pool(home: Path) -> None:
    out = home / "results" / "prefilter.json"
    options = ["--pool-sizes", "2,5,20", "--bootstrap", "200", "--out", str(out)]
    result = CliRunner().invoke(bench_app, ["prefilter", *options])
    assert result.exit_code == 0, result.output
    recorded = PrefilterResult.from_dict(json.loads(out.read_text()))
    assert recorded.users > 0 and recorded.catalog_items == 20
    recall = {(r.filter, r.pool_size): r for r in recorded.rows}
    assert set(recall) == {(f, n) for f in ("popularity", "item_mean", "random") for n in (2, 5, 20)}
    for name in ("popularity", "item_mean", "random"):
        # a bigger pool keeps at least as much; a pool of the whole catalogue keeps every unseen liked item
        assert recall[(name, 2)].recall <= recall[(name, 5)].recall <= recall[(name, 20)].recall
        assert all(r.low <= r.recall <= r.high for r in recorded.rows)
    assert recall[("random", 20)].recall == pytest.approx(1.0)
    assert "popularity" in result.output


def test_bench_prefilter_refuses_a_bad_pool_size(home: Path) -> None:
    result = CliRunner().invoke(bench_app, ["prefilter", "--pool-sizes", "0,5"])
    assert result.exit_code == 2 and "pool sizes must be >= 1" in result.output
