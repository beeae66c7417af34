"""Does serving and erasure cost grow with the catalogue?  (``python -m benchmarks scale``)

Every size N (items = users = N, ``ratings_per_user`` * N ratings from ``benchmarks.synthetic``) is loaded
into a fresh database of its own (every rating and profile sealed, as the service stores them), and all of
them are kept alive together, each with a separate API process (in-process client, tiny model), so that:

- recommendation latency through the HTTP API (20 fixed candidates; and the popular-unseen path,
  ``pool_size`` 20) is asked of the sizes in turn, request by request (A B A B ...): each pair of requests
  sees the same stretch of a shared machine, and the figure is the median of the per-pair ratios to the
  smallest size with a bootstrap interval;
- each API process's resident memory is read after start-up, after the requests and, for comparison,
  after reading every title (what the default prompt catalog held at start-up before migration 0006);

then, one size after the other (these erase users and file requests):

- the popular-unseen read alone, and the query it replaced (a count of every usable rating) on the same
  database: the replaced one grows with the ratings, the maintained ranking should not;
- intake: erasure requests/s against a bare insert loop on the same database (``benchmarks.intake``);
- batch forming: ``trigger_batch_now`` over a backlog of ``batch_requests`` fresh requests;
- erasure data deletion: a whole user's rows, profile and data key; one item of a user (the rest
  re-sealed).

Those figures are medians with min-max over their repeats; the ratio of the largest size to the smallest
is the scale figure (1.0: no growth).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from sqlalchemy import Select, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from benchmarks import intake, report
from benchmarks.synthetic import SynthConfig, write_synthetic
from core.data_keys import Keyring
from core.db.engine import make_engine, session_factory
from core.db.models import Interaction, Item, UserProfile, utcnow
from core.db.repositories import catalog as catalog_repo
from core.db.repositories.catalog import StoredRating
from core.ml.metrics import proc_status_kib
from core.services import batching
from core.services.erasures import create_erasure_request

CANDIDATES = [str(k) for k in range(1, 21)]  # fixed candidates: item ids 1..20 exist at every size
PROBE_USERS = 20


def timed(action: Callable[..., object], *arguments: Any) -> float:
    """Milliseconds ``action(*arguments)`` took."""
    started = time.perf_counter()
    action(*arguments)
    return (time.perf_counter() - started) * 1000


# ---------------------------------------------------------------------------------------------- loading


def load(sessions: sessionmaker[Session], folder: Path, chunk: int = 100_000) -> dict[str, float]:
    """The synthetic folder into the database through the catalog repository (sealed rows and profiles,
    a data key per user).  Split "train", no prompt history: nothing measured here reads either."""
    started = time.perf_counter()
    now = utcnow()
    with sessions() as session:
        for frame in pd.read_csv(folder / "movies.csv", dtype=str, keep_default_na=False, chunksize=chunk):
            rows = [{"item_id": i, "title": t, "genres": g} for i, t, g in frame.itertuples(index=False)]
            catalog_repo.insert_rows(session, Item, rows)
        session.commit()
        for frame in pd.read_csv(folder / "users.csv", dtype=str, keep_default_na=False, chunksize=chunk):
            profiles = [
                {"user_id": u, "age": a, "gender": g, "occupation": o}
                for u, a, g, o in frame.itertuples(index=False)
            ]
            catalog_repo.insert_rows(session, UserProfile, profiles)
            session.commit()
        for frame in pd.read_csv(folder / "ratings.csv", dtype=str, chunksize=chunk):
            ratings = [
                StoredRating(u, i, float(r), int(t), int(float(r) > 3), "", "train", now)
                for u, i, r, t in frame.itertuples(index=False)
            ]
            catalog_repo.insert_interactions(session, ratings)
            session.commit()
        stored = int(session.scalar(select(func.count()).select_from(Interaction)) or 0)
    return {"seconds": time.perf_counter() - started, "ratings": stored}


# ---------------------------------------------------------------------------------------------- the API


def prepare_api(url: str, home: Path, keyring: Keyring) -> str:
    """Register a tiny adapter v1 and make a recommend key; returns the key."""
    from benchmarks.load import _save_adapter
    from core.ml.model import TINY, ModelConfig
    from core.services.api_keys import create_api_key
    from core.services.bootstrap import register_first_version
    from core.settings import Settings

    config = ModelConfig(base=TINY, cache_dir=str(Settings().models_dir), device="cpu")
    engine = make_engine(url)
    try:
        with session_factory(engine, keyring)() as session:
            register_first_version(session, _save_adapter(config, home / "adapters" / "v1", 1), TINY)
            key = create_api_key(session, "scale", ["recommend"])
            session.commit()
    finally:
        engine.dispose()
    return key


def _memory_mb() -> dict[str, float]:
    """This process's resident memory now and at its peak (Linux /proc)."""
    figures = {name: proc_status_kib(key) for name, key in (("rss_mb", "VmRSS"), ("peak_mb", "VmHWM"))}
    if None in figures.values():
        raise RuntimeError("the scale benchmark reads memory from /proc/self/status (Linux only)")
    return {name: kib / 1024 for name, kib in figures.items() if kib is not None}


def serve(url: str, home: str, kek: str, key: str) -> None:
    """Run inside a long-lived API process (``python -m benchmarks.scale <json>``): start the app, then
    answer one JSON line per command read from stdin until it closes: ``ask`` (time one recommendation),
    ``memory``, ``titles`` (read every title, as the old default catalog did; memory after)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import ApiSettings

    settings = ApiSettings(
        environment="development",
        home=Path(home),
        database_url=url,
        base_model="tiny",
        data_kek_file=Path(kek),
        adapter_poll_seconds=60,
        history_len=5,
    )
    headers = {"X-API-Key": key}

    def reply(message: dict[str, Any]) -> None:
        print(REPLY + json.dumps(message), flush=True)

    with TestClient(create_app(settings)) as client:

        def ask(body: dict[str, Any]) -> None:
            answer = client.post("/v1/recommendations", json=body, headers=headers)
            assert answer.status_code == 200, answer.text

        reply({"memory": _memory_mb()})
        for line in sys.stdin:
            message = json.loads(line)
            if message["op"] == "ask":
                reply({"ms": timed(ask, message["body"])})
            elif message["op"] == "memory":
                reply({"memory": _memory_mb()})
            else:  # "titles"
                runtime = client.app.state.runtime  # type: ignore[attr-defined]
                with runtime.sessions() as session:
                    every_title = catalog_repo.titles(session)
                    reply({"memory": _memory_mb(), "titles": len(every_title)})


REPLY = "scale-reply "  # marks the API process's answers among anything else it prints


class ApiProcess:
    """A separate API process kept alive while its database is (``serve``), asked one command at a time."""

    def __init__(self, url: str, home: Path, kek: Path, key: str) -> None:
        arguments = json.dumps({"url": url, "home": str(home), "kek": str(kek), "key": key})
        self.log = home / "api-process.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.scale", arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "E2U_ENVIRONMENT": "development"},
            )
        self.memory_after_start: dict[str, float] = self._read()["memory"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(REPLY):
                answer: dict[str, Any] = json.loads(line[len(REPLY) :])
                return answer
        raise RuntimeError(f"the API process ended: {self.log.read_text()[-2000:]}")

    def call(self, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "body": body}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def ask(self, body: dict[str, Any]) -> float:
        """Milliseconds one recommendation took inside the API process."""
        return float(self.call("ask", body)["ms"])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


# ---------------------------------------------------------------------------------------------- interleaving

Ask = Callable[[dict[str, Any]], float]


def interleave(asks: Sequence[Ask], bodies: Sequence[dict[str, Any]]) -> list[list[float]]:
    """Each body asked of every size in turn (A B A B ...): times[size][body].  Sizes alternate request by
    request, so a slow stretch of the shared machine falls on both sizes alike."""
    times: list[list[float]] = [[] for _ in asks]
    for body in bodies:
        for index, ask in enumerate(asks):
            times[index].append(ask(body))
    return times


def paired_ratio(small: Sequence[float], large: Sequence[float], resamples: int = 2000) -> dict[str, Any]:
    """large / small per pair (the two requests asked one after the other): median, min-max, n, and a
    bootstrap 95% interval of the median (pairs resampled; seeded)."""
    per_pair = np.asarray(large, dtype=float) / np.asarray(small, dtype=float)
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(per_pair, size=(resamples, per_pair.size)), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return {**report.spread(per_pair.tolist()), "bootstrap_95": [float(low), float(high)]}


def latency(asks: Sequence[Ask], users: Sequence[str], warmup: int = 3) -> dict[str, Any]:
    """Recommendation latency at each size, interleaved: 20 fixed candidates, then the popular-unseen
    path, per user; ratios of every size to the first, per pair."""
    for user in users[:warmup]:  # first forward passes, caches: not measured
        for ask in asks:
            ask({"user_id": user, "k": 5, "candidates": CANDIDATES})
            ask({"user_id": user, "k": 5, "pool_size": 20})
    paths = {
        "recommend_fixed_candidates_ms": [{"user_id": u, "k": 5, "candidates": CANDIDATES} for u in users],
        "recommend_popular_unseen_ms": [{"user_id": u, "k": 5, "pool_size": 20} for u in users],
    }
    record: dict[str, Any] = {}
    for name, bodies in paths.items():
        times = interleave(asks, bodies)
        record[name] = {
            "per_size": [report.spread(t) for t in times],
            "ratio_to_first": [paired_ratio(times[0], t) for t in times[1:]],
        }
    return record


# ---------------------------------------------------------------------------------------------- reads


def old_popular_unseen(session: Session, user_id: str, limit: int) -> list[str]:
    """What ``popular_unseen_items`` answered before migration 0006, the same way."""
    return [str(row[0]) for row in session.execute(old_popular_unseen_query(user_id, limit))]


def old_popular_unseen_query(user_id: str, limit: int) -> Select[str, int]:
    """The query ``popular_unseen_items`` ran before migration 0006: every usable rating counted."""
    not_excluded = catalog_repo.not_excluded()
    seen = select(Interaction.item_id).where(Interaction.user_id == user_id, not_excluded)
    count = func.count(Interaction.id)
    return (
        select(Interaction.item_id, count)
        .where(not_excluded, Interaction.item_id.not_in(seen))
        .group_by(Interaction.item_id)
        .order_by(count.desc(), Interaction.item_id)
        .limit(limit)
    )


def plan(session: Session, statement: Any) -> list[str]:
    """The database's plan for ``statement`` (SQLite: EXPLAIN QUERY PLAN's steps; PostgreSQL: EXPLAIN)."""
    dialect = session.get_bind().dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
    return [str(row[-1]) for row in session.execute(text(prefix + sql))]


def reads(sessions: sessionmaker[Session], users: list[str], old_repeats: int) -> dict[str, Any]:
    with sessions() as session:
        new = [timed(catalog_repo.popular_unseen_items, session, u, 20) for u in users]
        old = [timed(old_popular_unseen, session, u, 20) for u in users[:old_repeats]]
        same = all(
            catalog_repo.popular_unseen_items(session, u, 20) == old_popular_unseen(session, u, 20)
            for u in users[:old_repeats]
        )
        plans = {
            "ranking": plan(session, catalog_repo.popularity_ranking().limit(40)),
            "replaced_full_count": plan(session, old_popular_unseen_query(users[0], 20)),
        }
    return {
        "popular_unseen_ms": report.spread(new),
        "replaced_full_count_ms": report.spread(old),
        "same_answer": same,
        "plans": plans,
    }


# ---------------------------------------------------------------------------------------------- erasure


def batch_forming(
    sessions: sessionmaker[Session], users: list[str], rounds: int, per_round: int
) -> dict[str, Any]:
    """Per round: file ``per_round`` requests, then time the admin trigger that batches them."""
    settings = batching.JobSettings()
    times = []

    def trigger(session: Session) -> None:
        batching.trigger_batch_now(session, settings)
        session.commit()

    with sessions() as session:  # the backlog left by the intake rounds first (untimed)
        batching.trigger_batch_now(session, settings)
        session.commit()
    for round_ in range(rounds):
        with sessions() as session:
            for user in users[round_ * per_round : (round_ + 1) * per_round]:
                create_erasure_request(session, user, None, intake.CONFIG)
            session.commit()
        with sessions() as session:
            times.append(timed(trigger, session))
    return {"trigger_ms": report.spread(times), "requests_per_trigger": per_round}


def deletion(sessions: sessionmaker[Session], whole: list[str], partial: list[str]) -> dict[str, Any]:
    """Time the data deletion of an erasure: whole users; one item of each ``partial`` user."""

    def whole_user(session: Session, user: str) -> None:
        catalog_repo.delete_scope_rows(session, user, None)
        catalog_repo.delete_profile(session, user)
        session.commit()

    def one_item(session: Session, user: str, item: str) -> None:
        catalog_repo.delete_scope_rows(session, user, [item])
        session.commit()

    whole_ms, item_ms, rows = [], [], []
    with sessions() as session:
        for user in whole:
            rows.append(len(catalog_repo.user_item_ids(session, user)))
            whole_ms.append(timed(whole_user, session, user))
        for user in partial:
            item = sorted(catalog_repo.user_item_ids(session, user))[0]
            item_ms.append(timed(one_item, session, user, item))
    return {
        "whole_user_ms": report.spread(whole_ms),
        "one_item_ms": report.spread(item_ms),
        "rows_per_whole_user": report.spread(rows),
    }


# ---------------------------------------------------------------------------------------------- a size


@dataclass
class Loaded:
    """One size's database, loaded and kept alive, with what an API process on it needs."""

    size: int
    dialect: str
    url: str
    home: Path
    kek: Path
    sessions: sessionmaker[Session]
    key: str
    generate_seconds: float
    load: dict[str, float]


@contextmanager
def loaded(
    kind: str, size: int, per_user: int, data_root: Path, echo: Callable[[str], None]
) -> Iterator[Loaded]:
    """A fresh database of ``kind`` loaded with the synthetic folder of ``size`` (generated once under
    ``data_root``), a tiny adapter v1 and a recommend key; dropped on exit."""
    folder = data_root / f"synthetic-{size}"
    generate = 0.0
    if not (folder / "ratings.csv").exists():
        generate = write_synthetic(folder, SynthConfig(size, size, per_user * size)).seconds
    echo(f"{size}: data in {folder} ({generate:.0f} s to generate)")
    with intake.database(kind) as (dialect, url), tempfile.TemporaryDirectory() as home_dir:
        home = Path(home_dir)
        kek = home / "keys" / "data-kek"
        keyring = Keyring(kek, create_missing=True)
        engine = make_engine(url)
        try:
            sessions = session_factory(engine, keyring)
            stored = load(sessions, folder)
            echo(f"{size}: loaded {stored['ratings']} ratings in {stored['seconds']:.0f} s")
            intake.link_models(home)
            key = prepare_api(url, home, keyring)
            yield Loaded(size, dialect, url, home, kek, sessions, key, generate, stored)
        finally:
            engine.dispose()


def api_figures(databases: Sequence[Loaded], probes: int) -> dict[str, Any]:
    """An API process per size, all alive at once; recommendation latency asked of them in turn
    (``latency``), then each one's memory: after the requests, and after reading every title."""
    processes: list[ApiProcess] = []
    try:
        for database in databases:
            processes.append(ApiProcess(database.url, database.home, database.kek, database.key))
        step = min(d.size for d in databases) // probes  # users that exist at every size, spread over ids
        record = latency([p.ask for p in processes], [str(1 + k * step) for k in range(probes)])
        record["memory"] = []
        for process in processes:
            after_requests = process.call("memory")["memory"]
            every_title = process.call("titles")
            record["memory"].append(
                {
                    "after_start": process.memory_after_start,
                    "after_requests": after_requests,
                    "holding_every_title": every_title["memory"],
                    "titles": every_title["titles"],
                }
            )
    finally:
        for process in processes:
            process.close()
    return record


@dataclass
class SizeResult:
    size: int
    ratings: int
    generate_seconds: float
    load: dict[str, float]
    api: dict[str, Any]
    reads: dict[str, Any]
    intake: dict[str, Any]
    batching: dict[str, Any]
    deletion: dict[str, Any]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def measure_size(
    database: Loaded, api: dict[str, Any], echo: Callable[[str], None], old_repeats: int
) -> SizeResult:
    """The rest of a size's figures, on its database (after the API latency: these erase users)."""
    started = time.perf_counter()
    size, sessions = database.size, database.sessions
    step = size // 1000
    read = reads(sessions, [str(2 + k * step) for k in range(PROBE_USERS)], old_repeats)
    echo(f"{size}: reads {json.dumps(read)}")
    pool = [str(3 + k * step) for k in range(900)]
    intake_result = intake.measure_on(sessions, database.dialect, pool[:600], 200, 3, echo)
    batch = batch_forming(sessions, pool[600:840], 3, 80)
    echo(f"{size}: batching {json.dumps(batch)}")
    erased = deletion(sessions, pool[840:860], pool[860:880])
    echo(f"{size}: deletion {json.dumps(erased)}")
    return SizeResult(
        size,
        int(database.load["ratings"]),
        database.generate_seconds,
        database.load,
        api,
        read,
        {
            **intake_result.summary(),
            "rounds": intake_result.rounds,
            "per_round": intake_result.requests_per_round,
        },
        batch,
        erased,
        time.perf_counter() - started,
    )


def ratios(small: SizeResult, large: SizeResult) -> dict[str, float]:
    """large / small for each figure (medians; the recommendation latency's paired ratios are apart)."""
    pairs = {
        "api_rss_after_requests_mb": lambda r: r.api["memory_after_requests"]["rss_mb"],
        "api_rss_holding_every_title_mb": lambda r: r.api["memory_holding_every_title"]["rss_mb"],
        "popular_unseen_ms": lambda r: r.reads["popular_unseen_ms"]["median"],
        "replaced_full_count_ms": lambda r: r.reads["replaced_full_count_ms"]["median"],
        "intake_requests_per_s": lambda r: r.intake["service_requests_per_s"]["median"],
        "intake_service_over_bare": lambda r: r.intake["service_over_bare"]["median"],
        "batch_trigger_ms": lambda r: r.batching["trigger_ms"]["median"],
        "delete_whole_user_ms": lambda r: r.deletion["whole_user_ms"]["median"],
        "delete_one_item_ms": lambda r: r.deletion["one_item_ms"]["median"],
    }
    return {name: read(large) / read(small) for name, read in pairs.items()}


def per_size_api(latencies: dict[str, Any], index: int) -> dict[str, Any]:
    """Size ``index``'s share of ``api_figures``' record."""
    memory = latencies["memory"][index]
    return {
        "memory_after_start": memory["after_start"],
        "memory_after_requests": memory["after_requests"],
        "memory_holding_every_title": memory["holding_every_title"],
        "titles": memory["titles"],
        **{name: latencies[name]["per_size"][index] for name in LATENCY_PATHS},
    }


LATENCY_PATHS = ("recommend_fixed_candidates_ms", "recommend_popular_unseen_ms")


def command(
    sizes: Annotated[
        list[int] | None, typer.Option("--size", help="items = users (repeat the option)")
    ] = None,
    ratings_per_user: Annotated[int, typer.Option(help="ratings = this x size")] = 5,
    database: Annotated[str, typer.Option(help="sqlite or postgresql")] = "sqlite",
    data_root: Annotated[Path, typer.Option(help="where the synthetic folders are kept")] = Path(
        "var/synthetic"
    ),
    old_repeats: Annotated[int, typer.Option(help="runs of the replaced full-count query")] = 3,
    probes: Annotated[int, typer.Option(help="recommendation requests per path and size, interleaved")] = 200,
    out: Annotated[Path | None, typer.Option(help="JSON file")] = None,
) -> None:
    """Every size loaded and served at once: recommendation latency interleaved across sizes (paired
    ratios to the smallest), API memory; then intake, batching, deletion per size; ratios largest/smallest."""
    chosen = sorted(sizes or [100_000, 1_000_000])
    if chosen[0] < 1000 or chosen[0] < probes:
        raise typer.BadParameter(
            "sizes start at 1000 and at --probes (the measured users are spread over the ids)"
        )
    with ExitStack() as stack:
        databases = [
            stack.enter_context(loaded(database, s, ratings_per_user, data_root, typer.echo)) for s in chosen
        ]
        latencies = api_figures(databases, probes)
        typer.echo(f"api {json.dumps(latencies)}")
        results = [
            measure_size(d, per_size_api(latencies, i), typer.echo, old_repeats)
            for i, d in enumerate(databases)
        ]
    record: dict[str, Any] = {
        "command": f"python -m benchmarks scale {' '.join(f'--size {s}' for s in chosen)} "
        f"--ratings-per-user {ratings_per_user} --database {database} --probes {probes}",
        "database": database,
        "sizes": [r.__dict__ for r in results],
        "interleaved_latency": {name: latencies[name] for name in LATENCY_PATHS},
        "at": utcnow().isoformat(),
    }
    for name in LATENCY_PATHS:
        for size, ratio in zip(chosen[1:], latencies[name]["ratio_to_first"], strict=True):
            low, high = ratio["bootstrap_95"]
            typer.echo(
                f"  {name} {size}/{chosen[0]}, per pair: x{ratio['median']:.2f} "
                f"[{low:.2f}, {high:.2f}] bootstrap 95%, n {ratio['n']}"
            )
    if len(results) > 1:
        record["ratio_largest_over_smallest"] = ratios(results[0], results[-1])
        for name, value in record["ratio_largest_over_smallest"].items():
            typer.echo(f"  {name}: x{value:.2f}")
    path = out or report.RESULTS / f"scale-{database}.json"
    report.save_json(record, path)
    typer.echo(f"wrote {path}")


if __name__ == "__main__":  # an API process of ``ApiProcess``
    serve(**json.loads(sys.argv[1]))
