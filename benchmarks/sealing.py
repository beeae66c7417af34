"""What sealing ratings costs (``e2u bench sealing``): import rows/s and one recommendation's catalog read
(the user's usable ratings and profile), sealed (the catalog repository as it is) against clear (the
storage and reads before migration 0004, replicated here on a table of the old shape in the same
database).  Both run in the same process on the same data, interleaved round by round; the figures are
ratios sealed/clear per round (median, min, max).  ``popular_unseen_items`` reads ids only (unchanged)
and is left out."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
)
from sqlalchemy.orm import Session

from benchmarks import report
from benchmarks.load import synthetic
from core.data_keys import Keyring
from core.db.engine import make_engine, session_factory
from core.db.migrate import upgrade
from core.db.models import (
    Interaction,
    Item,
    UserDataKey,
    UserProfile,
    utcnow,
)
from core.db.repositories import catalog as catalog_repo
from core.ml.data import PreparedData, SampleConfig, prepare

CLEAR = MetaData()
CLEAR_INTERACTIONS = Table(  # the interactions table as migration 0003 left it
    "bench_clear_interactions",
    CLEAR,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(64), index=True),
    Column("item_id", String(64)),
    Column("rating", Float),
    Column("timestamp", BigInteger),
    Column("label", Integer),
    Column("history", Text),
    Column("split", String(8)),
)
CLEAR_PROFILES = Table(
    "bench_clear_profiles",
    CLEAR,
    Column("user_id", String(64), primary_key=True),
    Column("age", String(16)),
    Column("gender", String(16)),
    Column("occupation", String(64)),
)


@dataclass
class SealingResult:
    database: str
    users: int
    rows_per_import: int
    rounds: int
    reads_per_round: int
    clear_import_rows_per_s: list[float]
    sealed_import_rows_per_s: list[float]
    clear_read_ms: list[float]  # per round: median of the round's reads
    sealed_read_ms: list[float]

    def summary(self) -> dict[str, Any]:
        imports = [
            s / c for s, c in zip(self.sealed_import_rows_per_s, self.clear_import_rows_per_s, strict=True)
        ]
        reads = [s / c for s, c in zip(self.sealed_read_ms, self.clear_read_ms, strict=True)]
        return {
            "import_throughput_sealed_over_clear": report.spread(imports),
            "read_time_sealed_over_clear": report.spread(reads),
        }


def _records(frame: pd.DataFrame) -> list[dict[str, str]]:
    return [{str(k): str(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """A frame's rows as named tuples; typed ``Any`` since each column is converted where used."""
    return frame.itertuples()


def _clear_import(session: Session, data: PreparedData) -> float:
    session.execute(delete(CLEAR_INTERACTIONS))
    session.execute(delete(CLEAR_PROFILES))
    session.commit()
    started = time.perf_counter()
    session.execute(CLEAR_PROFILES.insert(), _records(data.users[["user_id", "age", "gender", "occupation"]]))
    records = [
        {
            "user_id": str(r.user_id),
            "item_id": str(r.item_id),
            "rating": float(r.rating),
            "timestamp": int(r.timestamp),
            "label": int(r.label),
            "history": str(r.history),
            "split": str(r.split),
        }
        for r in _rows(data.samples)
    ]
    for start in range(0, len(records), 5000):
        session.execute(CLEAR_INTERACTIONS.insert(), records[start : start + 5000])
    session.commit()
    return len(records) / (time.perf_counter() - started)


def _sealed_import(session: Session, data: PreparedData) -> float:
    for model in (Interaction, UserProfile, UserDataKey):
        session.execute(delete(model))
    session.commit()
    started = time.perf_counter()
    catalog_repo.bulk_import(session, data.items.iloc[0:0], data.users, data.samples)
    session.commit()
    return len(data.samples) / (time.perf_counter() - started)


def _clear_read(session: Session, user: str) -> None:
    """The reads of a recommendation before 0004, as ``usable_interactions(user_id=)`` and
    ``profiles([user])`` were written then: the same query construction, ordered by time in SQL."""
    table, profiles = CLEAR_INTERACTIONS.c, CLEAR_PROFILES.c
    not_excluded = catalog_repo.not_excluded(table.user_id, table.item_id)
    columns = [getattr(table, c) for c in catalog_repo.SAMPLE_FRAME_COLUMNS]
    query = select(*columns).where(not_excluded, table.user_id.in_([user]))
    rows = session.execute(query.order_by(table.timestamp, table.user_id, table.item_id)).all()
    frame = pd.DataFrame(rows, columns=catalog_repo.SAMPLE_FRAME_COLUMNS)
    frame["rating"] = frame["rating"].astype(float)
    frame["timestamp"] = frame["timestamp"].astype("int64")
    frame["label"] = frame["label"].astype("int64")
    catalog_repo.filter_histories(frame, catalog_repo.excluded_scopes(session, [user]))
    excluded = catalog_repo.excluded_scopes(session, [user]).users
    found = session.execute(select(CLEAR_PROFILES).where(profiles.user_id.in_([user]))).all()
    _ = {p.user_id: (p.age, p.gender, p.occupation) for p in found if p.user_id not in excluded}


def _sealed_read(session: Session, user: str) -> None:
    catalog_repo.keyring(session).forget()  # cold: the user's data key is unwrapped again
    catalog_repo.usable_interactions(session, user_id=user)
    catalog_repo.profiles(session, [user])


def _read_ms(session: Session, users: list[str], read: Any) -> float:
    times = []
    for user in users:
        started = time.perf_counter()
        read(session, user)
        times.append((time.perf_counter() - started) * 1000)
    session.commit()
    return statistics.median(times)


def measure(
    users: int, per_user: int, rounds: int, reads: int, database_url: str | None, seed: int = 0
) -> SealingResult:
    """``rounds`` interleaved rounds (the order of clear and sealed alternates) of one import of
    ``users`` x ``per_user`` ratings and ``reads`` single-user reads each."""
    data = prepare(synthetic(users, per_user=per_user, seed=seed), SampleConfig(history_len=5))
    with tempfile.TemporaryDirectory() as folder:
        url = database_url or f"sqlite:///{Path(folder) / 'bench.sqlite'}"
        upgrade(url)
        engine = make_engine(url)
        CLEAR.create_all(engine)
        keyring = Keyring(Path(folder) / "data-kek", create_missing=True)
        result = SealingResult(engine.dialect.name, users, len(data.samples), rounds, reads, [], [], [], [])
        try:
            with session_factory(engine, keyring)() as session:
                catalog_repo.insert_rows(session, Item, _records(data.items[["item_id", "title", "genres"]]))
                session.commit()
                picker = random.Random(seed)
                ids = sorted(set(data.samples["user_id"]))
                for round_ in range(rounds):
                    for sealed in (round_ % 2 == 1, round_ % 2 == 0):
                        if sealed:
                            result.sealed_import_rows_per_s.append(_sealed_import(session, data))
                        else:
                            result.clear_import_rows_per_s.append(_clear_import(session, data))
                    chosen = picker.sample(ids, min(reads, len(ids)))
                    for sealed in (round_ % 2 == 1, round_ % 2 == 0):
                        read = _sealed_read if sealed else _clear_read
                        (result.sealed_read_ms if sealed else result.clear_read_ms).append(
                            _read_ms(session, chosen, read)
                        )
        finally:
            CLEAR.drop_all(engine)
            engine.dispose()
    return result


def command(
    users: Annotated[int, typer.Option(help="synthetic users")] = 1000,
    per_user: Annotated[int, typer.Option(help="ratings per user")] = 20,
    rounds: Annotated[
        int, typer.Option(help="interleaved rounds (each: one import and the reads, both ways)")
    ] = 5,
    reads: Annotated[int, typer.Option(help="single-user catalog reads per round and way")] = 50,
    postgres: Annotated[
        str | None, typer.Option(help="a throwaway PostgreSQL URL (default: a SQLite file)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file")] = None,
) -> None:
    """Import rows/s and one user's catalog read, sealed against clear, in the same run."""
    result = measure(users, per_user, rounds, reads, postgres)
    record = {**asdict(result), "summary": result.summary(), "at": utcnow().isoformat()}
    report.save_json(record, out or report.RESULTS / f"sealing-{result.database}.json")
    typer.echo(
        f"{result.database}: {result.rows_per_import} rows per import, {rounds} rounds, "
        f"{reads} reads per round"
    )
    for name, spread in result.summary().items():
        typer.echo(
            f"  {name}: median {spread['median']:.2f} [min {spread['min']:.2f}, max {spread['max']:.2f}]"
        )
