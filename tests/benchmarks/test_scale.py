"""The scale benchmark's parts on a small synthetic set: the loader stores what the folder holds, the
maintained ranking answers what the full count answered, and the intake loops run (not timed here)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from benchmarks import intake, scale
from benchmarks.synthetic import SynthConfig, write_synthetic
from core.data_keys import Keyring
from core.db.engine import make_engine, session_factory
from core.db.models import ErasureRequest, ItemPopularity


def test_load_reads_and_intake_on_a_small_synthetic_set(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "data", SynthConfig(items=1000, users=300, ratings=3000, seed=4))
    with intake.database("sqlite") as (dialect, url):
        engine = make_engine(url)
        try:
            sessions = session_factory(engine, Keyring(tmp_path / "kek", create_missing=True))
            assert scale.load(sessions, tmp_path / "data", chunk=700)["ratings"] == 3000
            with sessions() as session:
                assert session.scalar(select(func.sum(ItemPopularity.ratings))) == 3000
            read = scale.reads(sessions, [str(u) for u in range(1, 300, 15)], old_repeats=20)
            assert read["same_answer"]
            assert any("ix_item_popularity_rank" in step for step in read["plans"]["ranking"])
            result = intake.measure_on(sessions, dialect, [str(u) for u in range(1, 13)], 4, 3)
            assert len(result.service_requests_per_s) == len(result.bare_inserts_per_s) == 3
            with sessions() as session:  # 12 requests through the service, 12 bare rows
                assert session.scalar(select(func.count()).select_from(ErasureRequest)) == 24
        finally:
            engine.dispose()


def test_latency_alternates_the_sizes_request_by_request_and_pairs_the_ratios() -> None:
    asked: list[tuple[str, str, str]] = []  # (size, user, path) in the order asked

    def size(name: str, ms: float) -> scale.Ask:
        def ask(body: dict[str, Any]) -> float:
            asked.append((name, body["user_id"], "fixed" if "candidates" in body else "popular"))
            # a slow stretch of the machine: users 3 and 4 take 10x at both sizes alike
            return ms * (10 if body["user_id"] in ("3", "4") else 1) * (1 + int(body["user_id"]) / 100)

        return ask

    users = [str(u) for u in range(1, 7)]
    record = scale.latency([size("small", 2.0), size("large", 3.0)], users, warmup=1)

    warm, measured = asked[:4], asked[4:]
    assert [a[0] for a in warm] == ["small", "small", "large", "large"]
    assert [a[0] for a in measured] == ["small", "large"] * 12  # A B A B ..., never two of a size in a row
    assert [(a[1], a[2]) for a in measured[0::2]] == [(a[1], a[2]) for a in measured[1::2]]
    assert [a[2] for a in measured] == ["fixed"] * 12 + ["popular"] * 12
    for path in scale.LATENCY_PATHS:
        small, large = record[path]["per_size"]
        assert small["n"] == large["n"] == 6
        assert large["max"] / small["min"] > 10  # the slow stretch spreads each size's own figures
        ratio = record[path]["ratio_to_first"][0]
        # each pair saw the same stretch: every per-pair ratio is 1.5, however slow the stretch
        assert ratio["min"] == pytest.approx(1.5) and ratio["max"] == pytest.approx(1.5)
        assert ratio["median"] == pytest.approx(1.5) and ratio["n"] == 6
        assert ratio["bootstrap_95"] == pytest.approx([1.5, 1.5])


def test_paired_ratio_interval_is_taken_over_the_pairs() -> None:
    ratio = scale.paired_ratio([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert (ratio["median"], ratio["min"], ratio["max"], ratio["n"]) == (3.0, 1.0, 5.0, 5)
    low, high = ratio["bootstrap_95"]
    assert 1.0 <= low < 3.0 < high <= 5.0


@pytest.mark.slow  # two API processes that each import torch and load the tiny model
def test_two_sizes_served_at_once_answer_in_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")
    with ExitStack() as stack:
        databases = [
            stack.enter_context(scale.loaded("sqlite", size, 2, tmp_path / "data", lambda _: None))
            for size in (1000, 2000)
        ]
        record = scale.api_figures(databases, probes=4)
    for path in scale.LATENCY_PATHS:
        assert [figure["n"] for figure in record[path]["per_size"]] == [4, 4]
        assert record[path]["ratio_to_first"][0]["n"] == 4
    assert [memory["titles"] for memory in record["memory"]] == [1000, 2000]
