"""Erasure intake against the database's own insert rate (``python -m benchmarks intake``).

Per round, on the same database and engine: a bare SQLAlchemy loop inserting ``requests`` rows into
``erasure_requests`` (values computed beforehand, one row per transaction: every accepted request is
committed before its answer), and ``requests`` calls of the intake service
(``core.services.erasures.create_erasure_request`` with an Idempotency-Key, each for another user who
has data, then commit), a session per call as the API opens one per request.  The two loops alternate
which goes first from round to round; the figure is the ratio service/bare per round (median, min, max
over the rounds).  SQLite (a file, WAL, as the service runs it) and PostgreSQL (a throwaway database).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from benchmarks import report
from core.data_keys import Keyring
from core.db.engine import make_engine, session_factory
from core.db.migrate import upgrade
from core.db.models import ErasureRequest, ErasureStatus, Item, utcnow
from core.db.repositories import catalog as catalog_repo
from core.db.repositories.catalog import StoredRating
from core.services.erasures import IntakeConfig, create_erasure_request, idempotency_key_hash, user_hash

POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
CONFIG = IntakeConfig(salt="bench-salt")


@dataclass
class IntakeResult:
    database: str
    requests_per_round: int
    rounds: int
    bare_inserts_per_s: list[float]
    service_requests_per_s: list[float]

    def summary(self) -> dict[str, Any]:
        ratios = [s / b for s, b in zip(self.service_requests_per_s, self.bare_inserts_per_s, strict=True)]
        return {
            "service_over_bare": spread(ratios),
            "bare_inserts_per_s": spread(self.bare_inserts_per_s),
            "service_requests_per_s": spread(self.service_requests_per_s),
            "n": len(ratios),
        }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@contextmanager
def database(kind: str) -> Iterator[tuple[str, str]]:
    """A migrated, empty database of the benchmark's own: (dialect name, URL); dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'intake.sqlite'}"
            upgrade(url)
            yield "sqlite", url
        return
    name = f"bench_intake_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        upgrade(url)
        yield "postgresql", url
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed_users(sessions: sessionmaker[Session], users: list[str]) -> None:
    """One item and one rating per user: enough for intake to accept a request for each."""
    now = utcnow()
    with sessions() as session:
        catalog_repo.insert_rows(session, Item, [{"item_id": "i0", "title": "Film 0", "genres": ""}])
        rows = [StoredRating(u, "i0", 4.0, 1_000_000, 1, "", "train", now) for u in users]
        catalog_repo.insert_interactions(session, rows)
        session.commit()


def bare_rows(count: int, tag: str) -> list[dict[str, Any]]:
    """``count`` erasure_requests rows as the service would write them, computed before the timing."""
    now = utcnow()
    return [
        {
            "id": str(uuid.uuid4()),
            "owner": "operator",
            "idempotency_key_hash": idempotency_key_hash(CONFIG.salt, f"bare-{tag}-{k}"),
            "user_id": f"bare-{tag}-{k}",
            "user_hash": user_hash(CONFIG.salt, f"bare-{tag}-{k}"),
            "scope": "user",
            "status": ErasureStatus.RECEIVED.value,
            "created_at": now,
            "updated_at": now,
            "deadline_at": now + timedelta(days=CONFIG.deadline_days),
            "retry_count": 0,
        }
        for k in range(count)
    ]


def bare_loop(sessions: sessionmaker[Session], rows: list[dict[str, Any]]) -> float:
    """Rows per second: one insert and one commit per row, a session each."""
    statement = insert(ErasureRequest)
    started = time.perf_counter()
    for row in rows:
        with sessions() as session:
            session.execute(statement, row)
            session.commit()
    return len(rows) / (time.perf_counter() - started)


def service_loop(sessions: sessionmaker[Session], users: list[str], tag: str) -> float:
    """Requests per second through the intake service, one committed request per user."""
    started = time.perf_counter()
    for k, user in enumerate(users):
        with sessions() as session:
            create_erasure_request(session, user, None, CONFIG, idempotency_key=f"{tag}-{k}")
            session.commit()
    return len(users) / (time.perf_counter() - started)


def measure_on(
    sessions: sessionmaker[Session],
    dialect: str,
    users: list[str],
    requests: int,
    rounds: int,
    echo: Callable[[str], None] = lambda _: None,
) -> IntakeResult:
    """Interleaved rounds on a database whose ``users`` have data (``requests * rounds`` of them at least)."""
    bare: list[float] = []
    service: list[float] = []
    for round_ in range(rounds):
        rows = bare_rows(requests, f"r{round_}")
        batch = users[round_ * requests : (round_ + 1) * requests]
        tag = f"{uuid.uuid4().hex[:6]}-r{round_}"
        if round_ % 2 == 0:
            bare.append(bare_loop(sessions, rows))
            service.append(service_loop(sessions, batch, tag))
        else:
            service.append(service_loop(sessions, batch, tag))
            bare.append(bare_loop(sessions, rows))
        echo(f"  round {round_ + 1}: bare {bare[-1]:.0f}/s, service {service[-1]:.0f}/s")
    return IntakeResult(dialect, requests, rounds, bare, service)


def measure(kind: str, requests: int, rounds: int, echo: Callable[[str], None]) -> IntakeResult:
    with database(kind) as (dialect, url), tempfile.TemporaryDirectory() as keys:
        engine = make_engine(url)
        try:
            sessions = session_factory(engine, Keyring(Path(keys) / "data-kek", create_missing=True))
            users = [f"u{k}" for k in range(requests * rounds)]
            seed_users(sessions, users)
            return measure_on(sessions, dialect, users, requests, rounds, echo)
        finally:
            engine.dispose()


def command(
    databases: Annotated[list[str] | None, typer.Option("--database", help="sqlite, postgresql")] = None,
    requests: Annotated[int, typer.Option(help="requests (and bare inserts) per round")] = 300,
    rounds: Annotated[int, typer.Option(help="interleaved rounds")] = 7,
    out: Annotated[Path | None, typer.Option(help="JSON file")] = None,
) -> None:
    """Erasure requests accepted per second against a bare insert loop on the same database."""
    records = []
    for kind in databases or ["sqlite", "postgresql"]:
        typer.echo(f"{kind}: {rounds} rounds of {requests}")
        result = measure(kind, requests, rounds, typer.echo)
        summary = result.summary()
        ratio = summary["service_over_bare"]
        typer.echo(
            f"{result.database}: service/bare median {ratio['median']:.2f} [min {ratio['min']:.2f}, "
            f"max {ratio['max']:.2f}], n={summary['n']}; bare median "
            f"{summary['bare_inserts_per_s']['median']:.0f}/s, service median "
            f"{summary['service_requests_per_s']['median']:.0f}/s"
        )
        records.append({**asdict(result), "summary": summary})
    command_line = f"python -m benchmarks intake --requests {requests} --rounds {rounds}"
    path = out or report.RESULTS / "intake.json"
    report.save_json({"command": command_line, "results": records, "at": utcnow().isoformat()}, path)
    typer.echo(f"wrote {path}")
