"""Erasure intake against the database's own insert rate (``python -m benchmarks intake``).

Per round, on the same database and engine: a bare SQLAlchemy loop inserting ``requests`` rows into
``erasure_requests`` (values computed beforehand, one row per transaction: every accepted request is
committed before its answer), and ``requests`` calls of the intake service
(``core.services.erasures.create_erasure_request`` with an Idempotency-Key, each for another user who
has data, then commit), a session per call as the API opens one per request, and (``--http``, the
default) as many ``POST /v1/erasure-requests`` through the app in-process (a TestClient: no network;
authentication, admission, validation, the prompt-cache drop and the JSON answer included).  The HTTP
client: httpx's ASGI transport on an event loop of this thread (``asgi``: the app's own work, its thread
pool included, and little of the client's), and ``--client testclient`` adds Starlette's TestClient (its
portal makes several thread hops per request: it measures the client as much as the app).  The loops
take turns going first from round to round; the figure is the ratio service/bare per round (median, min, max
over the rounds).  SQLite (a file, WAL, as the service runs it) and PostgreSQL (a throwaway database).

``--concurrency N`` runs each loop as N concurrent clients splitting the round's rows: threads for the bare
and service loops (a session each, from the same engine and pool), tasks for the ASGI client (the app's
thread pool does the database work, as under real load); the TestClient loop stays one client.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
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
    http_requests_per_s: list[float] = field(default_factory=list)  # the ASGI client
    testclient_requests_per_s: list[float] = field(default_factory=list)
    concurrency: int = 1  # concurrent clients per loop (the TestClient loop: always 1)

    def summary(self) -> dict[str, Any]:
        bare = self.bare_inserts_per_s
        ratios = [s / b for s, b in zip(self.service_requests_per_s, bare, strict=True)]
        figures = {
            "service_over_bare": report.spread(ratios),
            "bare_inserts_per_s": report.spread(bare),
            "service_requests_per_s": report.spread(self.service_requests_per_s),
            "n": len(ratios),
        }
        if self.http_requests_per_s:
            http = self.http_requests_per_s
            figures["http_over_bare"] = report.spread([h / b for h, b in zip(http, bare, strict=True)])
            figures["http_requests_per_s"] = report.spread(http)
        if self.testclient_requests_per_s:
            slow = self.testclient_requests_per_s
            figures["testclient_over_bare"] = report.spread([h / b for h, b in zip(slow, bare, strict=True)])
            figures["testclient_requests_per_s"] = report.spread(slow)
        return figures


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


Task = TypeVar("Task")


def per_second(each: Callable[[int, Task], None], tasks: Sequence[Task], concurrency: int = 1) -> float:
    """Tasks per second when ``concurrency`` threads share ``tasks`` (task k goes to thread k mod N, in
    order); ``each(k, task)`` does one.  The first error of any thread is raised here."""
    errors: list[BaseException] = []

    def run(first: int) -> None:
        try:
            for k in range(first, len(tasks), concurrency):
                each(k, tasks[k])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return len(tasks) / elapsed


def bare_loop(sessions: sessionmaker[Session], rows: list[dict[str, Any]], concurrency: int = 1) -> float:
    """Rows per second: one insert and one commit per row, a session each."""
    statement = insert(ErasureRequest)

    def one(_k: int, row: dict[str, Any]) -> None:
        with sessions() as session:
            session.execute(statement, row)
            session.commit()

    return per_second(one, rows, concurrency)


def service_loop(sessions: sessionmaker[Session], users: list[str], tag: str, concurrency: int = 1) -> float:
    """Requests per second through the intake service, one committed request per user."""

    def one(k: int, user: str) -> None:
        with sessions() as session:
            create_erasure_request(session, user, None, CONFIG, idempotency_key=f"{tag}-{k}")
            session.commit()

    return per_second(one, users, concurrency)


HttpLoop = Callable[[list[str], str, int], float]


def testclient_loop(client: Any, key: str, users: list[str], tag: str) -> float:
    """Requests per second through ``POST /v1/erasure-requests`` (Starlette's TestClient), one per user."""
    started = time.perf_counter()
    for k, user in enumerate(users):
        headers = {"X-API-Key": key, "Idempotency-Key": f"{tag}-{k}"}
        check(client.post("/v1/erasure-requests", json={"user_id": user}, headers=headers))
    return len(users) / (time.perf_counter() - started)


def check(answer: httpx.Response) -> None:
    if answer.status_code != 201:
        raise RuntimeError(f"intake over HTTP answered {answer.status_code}: {answer.text}")


class AsgiClient:
    """The app on an event loop of this thread, its lifespan run, called through httpx's ASGI transport:
    each request passes the whole app (middleware, dependencies and endpoint in its thread pool,
    validation, the JSON answer) with no network and no thread hop of the client's own."""

    def __init__(self, app: Any) -> None:
        self.runner = asyncio.Runner()
        self.lifespan = app.router.lifespan_context(app)
        self.runner.run(self.lifespan.__aenter__())
        transport = httpx.ASGITransport(app=app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def loop(self, key: str, users: list[str], tag: str, concurrency: int = 1) -> float:
        """Requests per second through ``POST /v1/erasure-requests``, one per user: ``concurrency`` clients
        at once, each filing its share one after another."""

        async def client(first: int) -> None:
            for k in range(first, len(users), concurrency):
                headers = {"X-API-Key": key, "Idempotency-Key": f"{tag}-{k}"}
                body = {"user_id": users[k]}
                check(await self.client.post("/v1/erasure-requests", json=body, headers=headers))

        async def requests() -> float:
            started = time.perf_counter()
            await asyncio.gather(*(client(n) for n in range(concurrency)))
            return len(users) / (time.perf_counter() - started)

        return self.runner.run(requests())

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self.lifespan.__aexit__(None, None, None))
        self.runner.close()


def link_models(home: Path) -> None:
    """``home/models`` is the repository's converted models (read-only use): a throwaway home would
    otherwise convert the tiny model again, in the measured process."""
    from core.settings import Settings

    models = Settings(environment="development").models_dir.resolve()  # no production secrets needed
    (home / "models").symlink_to(models, target_is_directory=True)


@contextmanager
def api_clients(
    url: str, home: Path, sessions: sessionmaker[Session], clients: list[str]
) -> Iterator[dict[str, HttpLoop]]:
    """The app on this database with the tiny model and an erase key: a loop per client named
    (``asgi``, ``testclient``), each on an app of its own."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import ApiSettings
    from core.services.api_keys import create_api_key

    with sessions() as session:
        key = create_api_key(session, "intake", ["erase"])
        session.commit()
    link_models(home)
    settings = ApiSettings(environment="development", home=home, database_url=url, base_model="tiny")
    loops: dict[str, HttpLoop] = {}
    with ExitStack() as stack:
        if "asgi" in clients:
            asgi = AsgiClient(create_app(settings))
            stack.callback(asgi.close)
            loops["asgi"] = lambda users, tag, concurrency: asgi.loop(key, users, tag, concurrency)
        if "testclient" in clients:
            client = stack.enter_context(TestClient(create_app(settings)))
            loops["testclient"] = lambda users, tag, _concurrency: testclient_loop(client, key, users, tag)
        yield loops


def measure_on(
    sessions: sessionmaker[Session],
    dialect: str,
    users: list[str],
    requests: int,
    rounds: int,
    echo: Callable[[str], None] = lambda _: None,
    http: dict[str, HttpLoop] | None = None,
    concurrency: int = 1,
) -> IntakeResult:
    """Interleaved rounds on a database whose ``users`` have data (``requests * rounds`` of them at least,
    as many more for each loop through the API in ``http``: by client name, ``asgi``, ``testclient``),
    each loop as ``concurrency`` concurrent clients."""
    bare: list[float] = []
    service: list[float] = []
    over_http: dict[str, list[float]] = {name: [] for name in http or {}}
    for round_ in range(rounds):
        rows = bare_rows(requests, f"r{round_}")
        batch = users[round_ * requests : (round_ + 1) * requests]
        tag = f"{uuid.uuid4().hex[:6]}-r{round_}"
        loops: list[tuple[list[float], Callable[..., float], tuple[Any, ...]]] = [
            (bare, bare_loop, (sessions, rows, concurrency)),
            (service, service_loop, (sessions, batch, tag, concurrency)),
        ]
        for n, (name, loop) in enumerate((http or {}).items(), start=1):
            first = (n * rounds + round_) * requests
            chunk = users[first : first + requests]
            loops.append((over_http[name], loop, (chunk, f"{name}-{tag}", concurrency)))
        shift = round_ % len(loops)  # each loop goes first in turn
        for figures, run, arguments in loops[shift:] + loops[:shift]:
            figures.append(run(*arguments))
        shown = "".join(f", {name} {figures[-1]:.0f}/s" for name, figures in over_http.items())
        echo(f"  round {round_ + 1}: bare {bare[-1]:.0f}/s, service {service[-1]:.0f}/s{shown}")
    return IntakeResult(
        dialect,
        requests,
        rounds,
        bare,
        service,
        over_http.get("asgi", []),
        over_http.get("testclient", []),
        concurrency,
    )


def measure(
    kind: str,
    requests: int,
    rounds: int,
    echo: Callable[[str], None],
    clients: list[str],
    concurrency: int = 1,
) -> IntakeResult:
    with database(kind) as (dialect, url), tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        engine = make_engine(url)
        try:
            # the settings' development KEK under home: the API process reads the same one
            sessions = session_factory(engine, Keyring(home / "keys" / "data-kek", create_missing=True))
            users = [f"u{k}" for k in range(requests * rounds * (1 + len(clients)))]
            seed_users(sessions, users)
            if not clients:
                return measure_on(sessions, dialect, users, requests, rounds, echo, None, concurrency)
            with api_clients(url, home, sessions, clients) as loops:
                return measure_on(sessions, dialect, users, requests, rounds, echo, loops, concurrency)
        finally:
            engine.dispose()


CLIENTS = ("asgi", "testclient")


def command(
    databases: Annotated[list[str] | None, typer.Option("--database", help="sqlite, postgresql")] = None,
    requests: Annotated[int, typer.Option(help="requests (and bare inserts) per round")] = 300,
    rounds: Annotated[int, typer.Option(help="interleaved rounds")] = 7,
    http: Annotated[bool, typer.Option(help="loops through the HTTP API (in-process clients)")] = True,
    clients: Annotated[
        list[str] | None, typer.Option("--client", help="asgi (default), testclient: one loop each")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="concurrent clients per loop (TestClient: 1)")] = 1,
    out: Annotated[Path | None, typer.Option(help="JSON file")] = None,
) -> None:
    """Erasure requests accepted per second against a bare insert loop on the same database."""
    if concurrency < 1:
        raise typer.BadParameter(f"--concurrency must be >= 1, got {concurrency}")
    chosen = (clients or ["asgi"]) if http else []
    unknown = sorted(set(chosen) - set(CLIENTS))
    if unknown:
        raise typer.BadParameter(f"unknown clients {unknown}; known: {list(CLIENTS)}")
    records = []
    for kind in databases or ["sqlite", "postgresql"]:
        typer.echo(f"{kind}: {rounds} rounds of {requests}, {concurrency} concurrent client(s) per loop")
        result = measure(kind, requests, rounds, typer.echo, chosen, concurrency)
        summary = result.summary()
        ratio = summary["service_over_bare"]
        typer.echo(
            f"{result.database}: service/bare median {ratio['median']:.2f} [min {ratio['min']:.2f}, "
            f"max {ratio['max']:.2f}], n={summary['n']}; bare median "
            f"{summary['bare_inserts_per_s']['median']:.0f}/s, service median "
            f"{summary['service_requests_per_s']['median']:.0f}/s"
        )
        for name, label in (("http_over_bare", "ASGI client"), ("testclient_over_bare", "TestClient")):
            if name in summary:
                web = summary[name]
                spread_text = f"[min {web['min']:.2f}, max {web['max']:.2f}]"
                typer.echo(f"  through HTTP ({label}): http/bare median {web['median']:.2f} {spread_text}")
        records.append({**asdict(result), "summary": summary})
    command_line = (
        f"python -m benchmarks intake --requests {requests} --rounds {rounds}"
        + (f" --concurrency {concurrency}" if concurrency > 1 else "")
        + ("".join(f" --client {name}" for name in chosen) if http else " --no-http")
    )
    path = out or report.RESULTS / "intake.json"
    report.save_json({"command": command_line, "results": records, "at": utcnow().isoformat()}, path)
    typer.echo(f"wrote {path}")
