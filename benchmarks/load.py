"""Load drills on loopback: a burst of erasure requests sent at once, and a mixed load (erasures +
recommendations, across a promotion) for a few minutes, against a real uvicorn server on 127.0.0.1 with
the tiny model on a throwaway database.  Afterwards every accepted request must be stored.

    python -m benchmarks.load                      # 500-burst + 3-minute mixed load, embedded SQLite
    python -m benchmarks.load --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test  # throwaway schema
    python -m benchmarks.load --burst 60 --minutes 0 --save    # --save: write benchmarks/results/

Every answer must be a success or a refusal with 503 + ``Retry-After`` (admission control); any other
status, a transport error, or an accepted request missing afterwards counts as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import torch
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select, text

from app.main import create_app
from app.settings import ApiSettings
from core.db.engine import make_engine, session_factory
from core.db.migrate import upgrade
from core.db.models import ErasureRequest
from core.ml.data import Dataset, SampleConfig, prepare
from core.ml.model import TINY, LoraSpec, ModelConfig, adapter_sha256, load_base, new_adapter, save_adapter
from core.ml.prompts import Catalog
from core.services import registry
from core.services.api_keys import create_api_key
from core.services.bootstrap import import_prepared, register_first_version
from core.serving import ModelServer

RESULTS = Path(__file__).resolve().parent / "results"
REPO_MODELS = Path(__file__).resolve().parents[1] / "var" / "models"


# ---------------------------------------------------------------------------------------------- target


@dataclass(frozen=True)
class Target:
    settings: ApiSettings
    erase_key: str
    recommend_key: str
    admin_key: str
    all_key: str  # every scope (the schema fuzzer's)
    users: list[str]
    candidate_version: str  # registered, not active: the mixed load promotes it half-way
    model: ModelConfig

    def app(self) -> FastAPI:
        server = ModelServer(load_base(self.model), Catalog(titles={}, profiles={}), batch_size=8)
        return create_app(self.settings, model_server=server)


def synthetic(users: int, items: int = 40, per_user: int = 6, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for n, i in enumerate(rng.choice(items, size=per_user, replace=False)):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), 1_000_000 + 100 * u + n))
    catalog = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(items)], "title": [f"Movie {i}" for i in range(items)]}
    ).assign(genres="")
    profiles = pd.DataFrame({"user_id": [f"u{u}" for u in range(users)]}).assign(
        age="30", gender="F", occupation="writer"
    )
    return Dataset(
        pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]), catalog, profiles
    )


def _save_adapter(config: ModelConfig, folder: Path, seed: int) -> Path:
    loaded = load_base(config)
    new_adapter(loaded, LoraSpec(r=2, alpha=4), "x", seed=seed)
    with torch.no_grad():  # non-zero B, so that the two versions score differently
        for name, value in loaded.model.named_parameters():
            if "lora_B" in name:
                value.normal_(0, 0.02)
    save_adapter(loaded, "x", folder, {"kind": "train"})
    return folder


def prepare_target(
    home: Path,
    database_url: str | None = None,
    users: int = 600,
    models_dir: Path = REPO_MODELS,
    base: str = TINY,
    items: int = 40,
    **extra: Any,
) -> Target:
    """Migrate and seed a throwaway database (``users`` synthetic users, ``items`` items), register
    adapter v1 (active) and a candidate v2 on ``base``, create one key per scope.  ``extra``: more
    ``ApiSettings`` fields."""
    url = database_url or f"sqlite:///{home / 'e2u.sqlite'}"
    settings = ApiSettings(
        environment="development",  # a throwaway service on loopback: generated keys, dev salt
        home=home,
        database_url=url,
        base_model=base,
        adapter_poll_seconds=0.5,
        history_len=3,
        **extra,
    )
    upgrade(url)
    config = ModelConfig(base=base, cache_dir=str(models_dir), device="cpu")
    engine = make_engine(url)
    try:
        with session_factory(engine, settings.keyring())() as session:
            import_prepared(session, prepare(synthetic(users, items), SampleConfig(history_len=3)))
            v1 = register_first_version(session, _save_adapter(config, home / "adapters" / "v1", 1), base)
            assert v1 is not None, "the database already holds a registry: give a fresh one"
            v2_folder = _save_adapter(config, home / "adapters" / "v2", 2)
            sha = adapter_sha256(v2_folder)
            registry.register_version(session, sha[:16], v1, base, v2_folder, sha, {}, {}, set())
            keys = {s: create_api_key(session, f"load-{s}", [s]) for s in ("erase", "recommend", "admin")}
            keys["all"] = create_api_key(session, "load-all", ["erase", "recommend", "admin"])
            session.commit()
    finally:
        engine.dispose()
    return Target(
        settings,
        keys["erase"],
        keys["recommend"],
        keys["admin"],
        keys["all"],
        [f"u{u}" for u in range(users)],
        sha[:16],
        config,
    )


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", backlog=2048, timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextlib.contextmanager
def throwaway_schema(postgres_url: str) -> Iterator[str]:
    """A new PostgreSQL schema on ``postgres_url``, dropped afterwards; yields a URL that uses it."""
    schema = f"e2u_load_{uuid.uuid4().hex[:10]}"
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield f"{postgres_url}{'&' if '?' in postgres_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


# ---------------------------------------------------------------------------------------------- drills


@dataclass
class Outcome:
    """What a run of requests got back."""

    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)  # "201", "503", "transport error", ...
    refused_without_retry_after: int = 0
    latencies: list[float] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)
    served_by: Counter[str] = field(default_factory=Counter)  # recommendations per adapter version
    promotion: int | None = None  # the status of the promotion during the run, if any

    @property
    def errors(self) -> int:
        """Answers that are neither a success nor a 503 with Retry-After."""
        ok = sum(n for s, n in self.statuses.items() if s.isdigit() and 200 <= int(s) < 300)
        return self.requests - ok - (self.statuses["503"] - self.refused_without_retry_after)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else None,
            "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
            "statuses": dict(sorted(self.statuses.items())),
            "refused_without_retry_after": self.refused_without_retry_after,
            "errors": self.errors,
            **({"served_by": dict(self.served_by)} if self.served_by else {}),
            **({"promotion": self.promotion} if self.promotion is not None else {}),
        }


async def _send(
    client: httpx.AsyncClient, outcome: Outcome, path: str, body: dict[str, Any], key: str
) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(path, json=body, headers={"X-API-Key": key})
    except httpx.HTTPError as error:
        outcome.statuses[f"transport error ({type(error).__name__})"] += 1
        return
    finally:
        outcome.requests += 1
    outcome.latencies.append(time.perf_counter() - started)
    outcome.statuses[str(response.status_code)] += 1
    if response.status_code == 503 and "retry-after" not in response.headers:
        outcome.refused_without_retry_after += 1
    if response.status_code in (200, 201) and path.endswith("erasure-requests"):
        outcome.accepted_ids.append(response.json()["id"])
    if response.status_code == 200 and path.endswith("recommendations"):
        outcome.served_by[response.json()["adapter_version"]] += 1


def _client(base_url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(120.0))


async def burst(base_url: str, key: str, users: list[str]) -> Outcome:
    """One erasure request per user, all sent at once (one connection each)."""
    outcome = Outcome()
    async with _client(base_url, len(users)) as client:
        started = time.perf_counter()
        await asyncio.gather(
            *(_send(client, outcome, "/v1/erasure-requests", {"user_id": u}, key) for u in users)
        )
        outcome.seconds = time.perf_counter() - started
    return outcome


async def mixed(target: Target, base_url: str, seconds: float, concurrency: int, users: list[str]) -> Outcome:
    """``concurrency`` clients in a loop for ``seconds``: one request in five files an erasure request for
    a user of the second half (each at most once), the others ask for recommendations for users of the
    first half (a user under erasure is answered 404); the candidate version is promoted half-way."""
    outcome = Outcome()
    readers, erasable = users[: len(users) // 2], users[len(users) // 2 :]
    stop_at = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient, n: int) -> None:
        i = n
        while time.perf_counter() < stop_at:
            user = readers[i % len(readers)]
            if i % 5 == 0 and erasable:
                await _send(
                    client, outcome, "/v1/erasure-requests", {"user_id": erasable.pop()}, target.erase_key
                )
            else:
                body = {"user_id": user, "k": 5, "pool_size": 10}
                await _send(client, outcome, "/v1/recommendations", body, target.recommend_key)
            i += concurrency

    async def promote_half_way(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(seconds / 2)
        path = f"/v1/admin/adapters/{target.candidate_version}/promote"
        response = await client.post(path, headers={"X-API-Key": target.admin_key})
        outcome.promotion = response.status_code
        print(f"  promotion of {target.candidate_version}: {response.status_code}", flush=True)

    async with _client(base_url, concurrency + 1) as client:
        started = time.perf_counter()
        await asyncio.gather(promote_half_way(client), *(client_loop(client, n) for n in range(concurrency)))
        outcome.seconds = time.perf_counter() - started
    return outcome


def missing_requests(database_url: str, accepted_ids: list[str]) -> list[str]:
    """Accepted request ids that the database does not hold (must be none)."""
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as session:
            stored = set(session.scalars(select(ErasureRequest.id)))
    finally:
        engine.dispose()
    return sorted(set(accepted_ids) - stored)


# ---------------------------------------------------------------------------------------------- command


def machine() -> str:
    """CPU model and count, OS, Python: where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {cores} cores usable, {system}, Python {platform.python_version()}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "database": "postgresql" if args.postgres else "sqlite (embedded)",
        "settings": {"burst": args.burst, "minutes": args.minutes, "concurrency": args.concurrency},
    }
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="e2u-load-"))
        url = stack.enter_context(throwaway_schema(args.postgres)) if args.postgres else None
        target = prepare_target(Path(tmp), url, users=args.burst + args.users)
        with serve(target.app()) as base_url:
            print(f"burst: {args.burst} erasure requests for {args.burst} users at once", flush=True)
            outcome = asyncio.run(burst(base_url, target.erase_key, target.users[: args.burst]))
            lost = missing_requests(target.settings.database_url_resolved, outcome.accepted_ids)
            report["burst"] = {**outcome.summary(), "accepted": len(outcome.accepted_ids), "lost": len(lost)}
            print(json.dumps(report["burst"]), flush=True)
            if args.minutes > 0:
                print(f"mixed: {args.concurrency} clients for {args.minutes} min", flush=True)
                rest = target.users[args.burst :]
                outcome = asyncio.run(mixed(target, base_url, 60 * args.minutes, args.concurrency, rest))
                lost = missing_requests(target.settings.database_url_resolved, outcome.accepted_ids)
                report["mixed"] = {
                    **outcome.summary(),
                    "concurrency": args.concurrency,
                    "erasures_accepted": len(outcome.accepted_ids),
                    "lost": len(lost),
                }
                print(json.dumps(report["mixed"]), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=500, help="erasure requests sent at once")
    parser.add_argument("--minutes", type=float, default=3.0, help="mixed load duration (0: none)")
    parser.add_argument("--concurrency", type=int, default=32, help="mixed load clients")
    parser.add_argument("--users", type=int, default=2000, help="users for the mixed load's erasures")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL database to use a throwaway schema of (default: SQLite)",
    )
    parser.add_argument("--save", action="store_true", help="write the report under benchmarks/results/")
    args = parser.parse_args(argv)
    report = run(args)
    failed = any(report[k]["errors"] or report[k]["lost"] for k in ("burst", "mixed") if k in report)
    print("held: every answer a success or 503 + Retry-After, none lost" if not failed else "FAILED")
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"load-{report['date'][:10]}-{report['database'].split()[0]}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
