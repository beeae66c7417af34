"""The scale benchmark's parts on a small synthetic set: the loader stores what the folder holds, the
maintained ranking answers what the full count answered, and the intake loops run (not timed here)."""

from __future__ import annotations

from pathlib import Path

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
