"""Serving throughput through the HTTP API, in process: ``python -m benchmarks serving``.

A throwaway service (synthetic users and items, adapter v1 on the chosen base) runs under uvicorn on
loopback in this process; asyncio clients send ``POST /v1/recommendations`` with ``candidates`` explicit
items each, ``requests`` requests per client one after another, at each concurrency.  Measured in the
same process, on the same requests' tokens:

- bare forward, one request per pass: ``Scorer.rank_encoded`` on pre-tokenized work (no HTTP, no
  database, no tokenizer): the physical limit of this machine for these tokens;
- bare forward, rounds of ``max_rows``: the same, batched as the server's rounds batch them;
- naive: every candidate's whole prompt (no shared prefix), ``inference_batch_size`` prompts per pass.

Levers, each changed alone against the default at the highest concurrency: batching across requests
off, ``rank_batch_size`` halved and doubled, torch threads 1 (when the default is more).  Every
configuration runs once per repeat, in the same order (interleaved), so that a slow minute of the shared
machine hits all of them; figures are medians over the repeats with their min-max, and each ratio is
taken within a repeat before its median.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import torch
import typer

from app.main import create_app
from benchmarks import report
from benchmarks.load import prepare_target, serve
from core.db.engine import make_engine, session_factory
from core.db.models import utcnow
from core.ml.model import load_base
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import RankWork
from core.services import recommendations as service
from core.serving import Batching, ModelServer


@dataclass(frozen=True)
class Config:
    """One serving configuration (a lever changed from the default, or the default itself)."""

    name: str
    batching: bool = True
    rank_batch_size: int = 32
    threads: int | None = None  # None: the process's default


@dataclass
class Spread:
    """Values over the repeats: their median and min-max."""

    values: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return report.spread(self.values)


@dataclass(frozen=True)
class HttpRun:
    candidates_per_second: float
    p50_seconds: float
    p99_seconds: float
    errors: int


async def _client_requests(
    client: httpx.AsyncClient, key: str, users: Sequence[str], candidates: list[str], latencies: list[float]
) -> int:
    errors = 0
    for user in users:
        started = time.perf_counter()
        response = await client.post(
            "/v1/recommendations",
            json={"user_id": user, "k": 5, "candidates": candidates},
            headers={"X-API-Key": key},
        )
        latencies.append(time.perf_counter() - started)
        errors += response.status_code != 200
    return errors


async def _http(
    base_url: str, key: str, users: list[str], concurrency: int, requests: int, candidates: list[str]
) -> HttpRun:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=600) as client:
        plans = [
            [users[(c * requests + r) % len(users)] for r in range(requests)] for c in range(concurrency)
        ]
        started = time.perf_counter()
        errors = await asyncio.gather(
            *(_client_requests(client, key, plan, candidates, latencies) for plan in plans)
        )
        seconds = time.perf_counter() - started
    return HttpRun(
        candidates_per_second=len(latencies) * len(candidates) / seconds,
        p50_seconds=float(np.percentile(latencies, 50)),
        p99_seconds=float(np.percentile(latencies, 99)),
        errors=sum(errors),
    )


def _per_second(count: int, run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


@dataclass(frozen=True)
class ServingResult:
    base: str
    command: str
    candidates: int
    requests_per_client: int
    concurrency: list[int]
    repeats: int
    tokens_shared_per_candidate: float
    tokens_naive_per_candidate: float
    figures: dict[str, dict[str, dict[str, float | int]]]  # run -> figure -> median/min/max/n
    ratios: dict[str, dict[str, float | int]]
    errors: int
    machine: dict[str, Any]
    at: str

    def table(self) -> str:
        columns = [
            report.Column("run", 32, "<"),
            report.Column("cand/s", 9),
            report.Column("min-max", 17),
            report.Column("p50 s", 7),
            report.Column("p99 s", 7),
        ]
        rows = []
        for name, figures in self.figures.items():
            rate = figures["candidates_per_second"]
            p50, p99 = figures.get("p50_seconds", {}), figures.get("p99_seconds", {})
            rows.append(
                [
                    name,
                    report.fmt(rate.get("median"), ".1f"),
                    f"{report.fmt(rate.get('min'), '.1f')}-{report.fmt(rate.get('max'), '.1f')}",
                    report.fmt(p50.get("median"), ".3f"),
                    report.fmt(p99.get("median"), ".3f"),
                ]
            )
        lines = [report.format_table(columns, rows), ""]
        for name, spread in self.ratios.items():
            lines.append(
                f"{name}: median {spread['median']:.2f} [min {spread['min']:.2f}, max {spread['max']:.2f}]"
                f" (n={spread['n']})"
            )
        return "\n".join(lines)


def measure(
    base: str,
    candidates: int,
    requests: int,
    concurrency: list[int],
    repeats: int,
    levers: bool,
    command: str,
    log: Callable[[str], None],
) -> ServingResult:
    default_threads = torch.get_num_threads()
    top = max(concurrency)
    configs = [Config("default")]
    if levers:
        configs += [Config("batching off", batching=False), Config("rank_batch_size 16", rank_batch_size=16)]
        configs += [Config("rank_batch_size 64", rank_batch_size=64)]
        if default_threads > 1:
            configs.append(Config("threads 1", threads=1))
    users_needed = max(top * requests, 16)
    with tempfile.TemporaryDirectory(prefix="e2u-serving-") as home:
        target = prepare_target(Path(home), None, users=users_needed, base=base, items=max(candidates, 40))
        items = [f"i{i}" for i in range(candidates)]
        loaded = load_base(target.model)
        batching = Batching(queue_limit=max(top, 16))
        server = ModelServer(loaded, Catalog(titles={}, profiles={}), batch_size=16, batching=batching)
        with serve(create_app(target.settings, model_server=server)) as base_url:
            deadline = time.monotonic() + 120
            while server.active_version is None and time.monotonic() < deadline:
                time.sleep(0.1)
            works, prompts = _tokens(target.settings, server, target.users, items, top * requests)
            shared_tokens = sum(w.tokens for w in works) / (len(works) * candidates)
            naive_tokens = sum(len(p) for group in prompts for p in group) / (len(prompts) * candidates)
            asyncio.run(_http(base_url, target.recommend_key, target.users, 1, 1, items))  # warm-up
            spreads: dict[str, dict[str, Spread]] = {}
            ratios: dict[str, Spread] = {}
            errors = 0

            def record(name: str, **values: float) -> None:
                for figure, value in values.items():
                    spreads.setdefault(name, {}).setdefault(figure, Spread()).values.append(value)

            for repeat in range(repeats):
                bare = _bare(server, works[:requests], prompts[:requests], candidates)
                for name, value in bare.items():
                    record(name, candidates_per_second=value)
                limit = max(bare["bare forward, 1 request/pass"], bare["bare forward, rounds"])
                ratios.setdefault("prefix-shared / naive (bare)", Spread()).values.append(
                    bare["bare forward, 1 request/pass"] / bare["naive per-candidate"]
                )
                for config in configs:
                    for clients in concurrency if config.name == "default" else [top]:
                        _apply(server, config, default_threads)
                        run = asyncio.run(
                            _http(base_url, target.recommend_key, target.users, clients, requests, items)
                        )
                        errors += run.errors
                        name = f"http c={clients}" + ("" if config.name == "default" else f", {config.name}")
                        record(
                            name,
                            candidates_per_second=run.candidates_per_second,
                            p50_seconds=run.p50_seconds,
                            p99_seconds=run.p99_seconds,
                        )
                        ratios.setdefault(f"{name} / bare limit", Spread()).values.append(
                            run.candidates_per_second / limit
                        )
                _apply(server, configs[0], default_threads)
                log(f"repeat {repeat + 1}/{repeats} done")
    return ServingResult(
        base=base,
        command=command,
        candidates=candidates,
        requests_per_client=requests,
        concurrency=concurrency,
        repeats=repeats,
        tokens_shared_per_candidate=shared_tokens,
        tokens_naive_per_candidate=naive_tokens,
        figures={n: {f: s.summary() for f, s in figures.items()} for n, figures in spreads.items()},
        ratios={n: s.summary() for n, s in ratios.items()},
        errors=errors,
        machine=report.Machine.here(loaded.device).to_dict() | {"default_torch_threads": default_threads},
        at=utcnow().isoformat(),
    )


def _apply(server: ModelServer, config: Config, default_threads: int) -> None:
    server.batching = Batching(enabled=config.batching, queue_limit=server.batching.queue_limit)
    server.scorer.rank_batch_size = config.rank_batch_size
    torch.set_num_threads(config.threads or default_threads)


def _tokens(
    settings: Any, server: ModelServer, users: list[str], items: list[str], count: int
) -> tuple[list[RankWork], list[list[list[int]]]]:
    """The tokens the API's requests read: per user, the prefix-shared work and the naive full prompts
    (histories and catalog read through the same services as the endpoint)."""
    engine = make_engine(settings.database_url_resolved)
    works, prompts = [], []
    try:
        with session_factory(engine, settings.keyring())() as session:
            for user in users[:count]:
                history = service.user_history(session, user, settings.history_len)
                catalog = service.prompt_catalog(session, [user])
                builder = PromptBuilder(server.loaded.tokenizer, catalog, server.loaded.prompt)
                works.append(server.scorer.encode_ranking(builder, user, history, items))
                prompts.append([server.scorer.encode(user, history, item, builder) for item in items])
    finally:
        engine.dispose()
    return works, prompts


def _bare(
    server: ModelServer, works: list[RankWork], prompts: list[list[list[int]]], candidates: int
) -> dict[str, float]:
    """Candidates per second of the model alone on the active adapter: one request per pass, rounds of
    the server's size, and the naive path; under the forward lock (nothing else runs meanwhile)."""
    scorer = server.scorer
    with server._forward_lock:
        rows = server.batching.max_rows
        per_round = max(1, rows // candidates)
        rounds = [works[k : k + per_round] for k in range(0, len(works), per_round)]
        return {
            "bare forward, 1 request/pass": _per_second(
                len(works) * candidates, lambda: [scorer.rank_encoded([w]) for w in works]
            ),
            "bare forward, rounds": _per_second(
                len(works) * candidates, lambda: [scorer.rank_encoded(r) for r in rounds]
            ),
            "naive per-candidate": _per_second(
                len(prompts) * candidates, lambda: [scorer.margin_encoded(p) for p in prompts]
            ),
        }


def command(
    base: Annotated[str, typer.Option(help="smollm2, tiny, or a local model folder")] = "tiny",
    candidates: Annotated[int, typer.Option(help="candidates per request")] = 100,
    requests: Annotated[int, typer.Option(help="requests per client, one after another")] = 4,
    concurrency: Annotated[
        str, typer.Option(help="comma-separated numbers of concurrent clients")
    ] = "1,4,16",
    repeats: Annotated[int, typer.Option(help="interleaved repeats (medians and min-max over them)")] = 3,
    levers: Annotated[bool, typer.Option(help="also each lever alone at the highest concurrency")] = True,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's)")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file")] = None,
) -> None:
    """Candidates/s and latency through the HTTP API against the bare forward and naive scoring."""
    if threads is not None:
        torch.set_num_threads(threads)
    levels = [int(c) for c in concurrency.split(",") if c.strip()]
    line = (
        f"python -m benchmarks serving --base {base} --candidates {candidates} --requests {requests} "
        f"--concurrency {concurrency} --repeats {repeats}" + ("" if levers else " --no-levers")
    )
    result = measure(base, candidates, requests, levels, repeats, levers, line, typer.echo)
    path = out or report.RESULTS / f"serving_{base}.json"
    report.save_json(asdict(result), path)
    typer.echo(
        f"{base}: {candidates} candidates/request, {requests} requests/client, {repeats} interleaved "
        f"repeats; tokens per candidate {result.tokens_shared_per_candidate:.1f} shared, "
        f"{result.tokens_naive_per_candidate:.1f} naive; non-200 answers: {result.errors}"
    )
    typer.echo(result.table())
    typer.echo(f"wrote {path}")
