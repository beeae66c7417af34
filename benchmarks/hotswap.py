"""``e2u bench hotswap``: promotions under steady recommendation load, and the memory a swap takes.

An in-process API (uvicorn on 127.0.0.1, a throwaway SQLite database under a temporary home, synthetic
users) serves ``--clients`` threads that ask for recommendations without pause.  Each round promotes a new
adapter version the way the pipeline does (``registry.promote_version``, commit, then announce) once per
channel, interleaved:

- ``stamp``: announced through the promotion stamp file (the embedded mode: no Redis);
- ``redis``: announced on Redis pub/sub only (when Redis answers at ``--redis-url``);
- ``poll``: not announced; the API's registry poll (``--poll-seconds``) finds it.

Recorded per promotion: the time from the promotion's commit to the API's confirmation of the new version
in the database (what the pipeline waits for before it destroys the old weights and completes requests),
the time to the first answer naming it, failed requests, and the p99 latency of requests that started in
the swap window (promotion to confirmation + ``SETTLE_SECONDS``) against the p99 of those that started in
a window as long just before the promotion (pooled over the rounds).  A random pause (up to the poll
interval) before each promotion keeps the poll's phase from lining up with the rounds.

Memory (``/proc/self/status`` VmRSS, Linux) is measured in a fresh process: base model only, with the
active adapter, during a swap (a request still holds the old version, so both are loaded), after the old
one is freed, over ``--memory-cycles`` swaps.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import torch
import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.main import create_app
from app.settings import ApiSettings
from benchmarks import report
from benchmarks.load import REPO_MODELS, machine, serve, synthetic
from core.db.engine import make_engine, session_factory
from core.db.migrate import upgrade
from core.db.repositories import serving as serving_repo
from core.events import EventPublisher, PromotionStamp, promotion_event
from core.ml.data import SampleConfig, prepare
from core.ml.metrics import proc_status_kib
from core.ml.model import (
    LoraSpec,
    ModelConfig,
    adapter_sha256,
    load_base,
    new_adapter,
    save_adapter,
)
from core.ml.prompts import Catalog
from core.services import registry
from core.services.api_keys import create_api_key
from core.services.bootstrap import import_prepared, register_first_version
from core.serving import ModelServer

CHANNELS = ("stamp", "redis", "poll")
STEADY_SECONDS = 2.0  # at least this long between a swap's window and the next promotion
SETTLE_SECONDS = 0.5  # the swap window runs this long past the confirmation
CONFIRM_POLL_SECONDS = 0.01  # how often the benchmark looks for the confirmation (the pipeline: 0.2 s)
HISTORY_LEN = 3


# ---------------------------------------------------------------------------------------------- setup


def random_adapters(model: ModelConfig, root: Path, count: int, spec: LoraSpec) -> list[Path]:
    """``count`` adapters of shape ``spec`` with random non-zero B (so that versions differ), saved under
    ``root``; one base model loaded for all of them."""
    loaded = load_base(model)
    folders = []
    for n in range(count):
        name = f"a{n}"
        new_adapter(loaded, spec, name, seed=n)
        with torch.no_grad():
            for parameter_name, value in loaded.model.named_parameters():
                if "lora_B" in parameter_name and f".{name}." in parameter_name:
                    value.normal_(0, 0.02)
        save_adapter(loaded, name, root / f"v{n + 1}", {"kind": "train"})
        folders.append(root / f"v{n + 1}")
    return folders


@dataclass(frozen=True)
class Stack:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    versions: list[str]  # v1 active, the rest registered
    key: str
    users: list[str]


def api_settings(home: Path, base: str, poll: float, stamp_poll: float, redis_url: str | None) -> ApiSettings:
    return ApiSettings(
        environment="development",  # a throwaway service on loopback: generated keys, dev salt
        home=home,
        database_url=f"sqlite:///{home / 'e2u.sqlite'}",
        base_model=base,
        adapter_poll_seconds=poll,
        promotion_stamp_poll_seconds=stamp_poll,
        redis_url=redis_url,
        history_len=HISTORY_LEN,
    )


def seed_database(settings: ApiSettings, folders: list[Path], users: int) -> Stack:
    url, base = settings.database_url_resolved, settings.base_model
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine, settings.keyring())
    with sessions() as session:
        import_prepared(session, prepare(synthetic(users), SampleConfig(history_len=HISTORY_LEN)))
        v1 = register_first_version(session, folders[0], base)
        assert v1 is not None
        versions = [v1]
        for folder in folders[1:]:
            sha = adapter_sha256(folder)
            registry.register_version(session, sha[:16], v1, base, folder, sha, {}, {}, set())
            versions.append(sha[:16])
        key = create_api_key(session, "hotswap", ["recommend"])
        session.commit()
    return Stack(url, engine, sessions, versions, key, [f"u{u}" for u in range(users)])


def redis_answers(url: str) -> bool:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Answer:
    started: float  # time.monotonic()
    seconds: float
    status: str  # the HTTP status, or "transport error (...)"
    version: str | None


class Load:
    """``clients`` threads posting recommendation requests back to back until ``stop``."""

    def __init__(self, base_url: str, key: str, users: list[str], clients: int) -> None:
        self.base_url, self.key, self.users, self.clients = base_url, key, users, clients
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60.0) as client:
            i = n
            while not self._stop.is_set():
                body = {"user_id": self.users[i % len(self.users)], "k": 5, "pool_size": 10}
                started = time.monotonic()
                version = None
                try:
                    response = client.post("/v1/recommendations", json=body, headers={"X-API-Key": self.key})
                    status = str(response.status_code)
                    if response.status_code == 200:
                        version = response.json()["adapter_version"]
                except httpx.HTTPError as error:
                    status = f"transport error ({type(error).__name__})"
                answer = Answer(started, time.monotonic() - started, status, version)
                with self._lock:
                    self.answers.append(answer)
                i += self.clients

    def between(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if start <= a.started < end]


def p99(seconds: list[float]) -> float | None:
    """The 99th percentile (nearest rank); None for no samples."""
    if not seconds:
        return None
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


# ---------------------------------------------------------------------------------------------- swaps


@dataclass(frozen=True)
class Swap:
    channel: str
    round: int
    version: str
    confirmed_seconds: float | None  # promotion commit -> the API's confirmation committed (None: not seen)
    first_answer_seconds: float | None  # promotion commit -> the first answer naming the new version
    failed: int  # answers other than 200 that started in the window
    # latencies of the answers that started in the swap window (promotion to confirmation + settle) and
    # of the successful ones in a window as long just before the promotion
    before_ms: list[float]
    during_ms: list[float]

    @property
    def p99_before_ms(self) -> float | None:
        return p99(self.before_ms)

    @property
    def p99_during_ms(self) -> float | None:
        return p99(self.during_ms)


def promote(stack: Stack, version: str) -> tuple[dict[str, Any], float]:
    """Move the active alias to ``version`` as the pipeline does; returns the event and the commit time."""
    with stack.sessions() as session:
        current = registry.active_adapter(session)
        assert current is not None
        active = registry.promote_version(session, version, current.version_id, current.counter, "bench")
        session.commit()
        committed = time.monotonic()
    return promotion_event(active.version_id, active.counter, current.version_id, "promote"), committed


def confirmed(stack: Stack, process_id: str, version: str) -> bool:
    with stack.sessions() as session:
        return process_id in serving_repo.confirmations(session, version)


def one_swap(
    stack: Stack, load: Load, process_id: str, publisher: EventPublisher | None, version: str, wait: float
) -> tuple[float | None, float]:
    """Promote ``version``, announce it with ``publisher`` (None: not at all), wait up to ``wait`` s for
    the API's confirmation; returns (seconds to it or None, the promotion's commit time)."""
    event, committed = promote(stack, version)
    if publisher is not None:
        publisher.publish(event)
    deadline = committed + wait
    while time.monotonic() < deadline:
        if confirmed(stack, process_id, version):
            return time.monotonic() - committed, committed
        time.sleep(CONFIRM_POLL_SECONDS)
    return None, committed


def measure_swap(
    load: Load, channel: str, round_: int, version: str, committed: float, seconds: float | None
) -> Swap:
    """The swap that committed at ``committed`` and was confirmed ``seconds`` later (None: never): its
    window runs to the confirmation + ``SETTLE_SECONDS``; the steady window before it is as long."""
    window = (seconds if seconds is not None else 0.0) + SETTLE_SECONDS
    before = [a for a in load.between(committed - window, committed) if a.status == "200"]
    during = load.between(committed, committed + window)
    first = [
        a.started + a.seconds
        for a in load.between(committed, committed + window + 60)
        if a.version == version
    ]
    return Swap(
        channel,
        round_,
        version,
        seconds,
        (min(first) - committed) if first else None,
        sum(1 for a in during if a.status != "200"),
        [1000 * a.seconds for a in before],
        [1000 * a.seconds for a in during],
    )


# ---------------------------------------------------------------------------------------------- memory


def rss_mib() -> float | None:
    """This process's resident memory (VmRSS) in MiB; None where /proc is absent."""
    kib = proc_status_kib("VmRSS")
    return None if kib is None else kib / 1024


def _settled_rss(server: ModelServer | None = None) -> float | None:
    """RSS after a garbage collection and, given a server, one short forward pass: weights mapped from
    their files count only once a pass has read them, as they do in a serving process."""
    if server is not None:
        tokenizer = server.loaded.tokenizer
        with torch.no_grad():
            server.loaded.model(**tokenizer("Will the user like it? Yes", return_tensors="pt"))
    gc.collect()
    return rss_mib()


def measure_memory(model: ModelConfig, folders: list[Path], cycles: int) -> dict[str, Any]:
    """Run in a fresh process: RSS with the base only, with v1 active, then per cycle with two adapters
    loaded (a lease holds the old one while the new one activates) and after the old one is freed."""
    torch.set_num_threads(1)
    start = _settled_rss()
    server = ModelServer(load_base(model), Catalog(titles={}, profiles={}))
    base_only = _settled_rss(server)
    server.activate("v1", folders[0])
    one_adapter = _settled_rss(server)
    adapter_mib = sum(
        p.numel() * p.element_size() for n, p in server.loaded.model.named_parameters() if "lora_" in n
    ) / (1024 * 1024)
    two, freed = [], []
    for n in range(1, cycles + 1):
        old = server.active_version
        with server.lease():  # an in-flight request on the old version
            server.activate(f"v{n + 1}", folders[n])
            two.append(_settled_rss(server))
            assert len(server.loaded_versions()) == 2
        assert server.loaded_versions() == [f"v{n + 1}"] and old in server.freed
        freed.append(_settled_rss(server))
    return {
        "process_start_mib": start,
        "base_only_mib": base_only,
        "one_adapter_mib": one_adapter,
        "two_adapters_mib": two,
        "after_old_freed_mib": freed,
        "adapter_parameters_mib": adapter_mib,
    }


def memory_in_fresh_process(model: ModelConfig, folders: list[Path], cycles: int) -> dict[str, Any]:
    """``measure_memory`` in a spawned process, so that nothing this one loaded counts."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(measure_memory, (model, folders, cycles))
    return result


# ---------------------------------------------------------------------------------------------- record


@dataclass
class HotswapResult:
    command: str
    date: str
    machine: str
    base: str
    clients: int
    poll_seconds: float
    stamp_poll_seconds: float
    channels: list[str]
    redis: str  # "up at URL", or why it was left out
    swaps: list[Swap] = field(default_factory=list)
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    memory: dict[str, Any] | None = None

    def per_channel(self) -> dict[str, dict[str, Any]]:
        out = {}
        for channel in self.channels:
            swaps = [s for s in self.swaps if s.channel == channel]
            ratios: list[float | None] = [
                d / b
                for b, d in ((s.p99_before_ms, s.p99_during_ms) for s in swaps)
                if b is not None and d is not None and b > 0
            ]
            # pooled over the rounds: one swap's window holds too few answers for a p99 of its own
            pooled_before = p99([ms for s in swaps for ms in s.before_ms])
            pooled_during = p99([ms for s in swaps for ms in s.during_ms])
            out[channel] = {
                "confirmed_seconds": report.spread([s.confirmed_seconds for s in swaps]),
                "first_answer_seconds": report.spread([s.first_answer_seconds for s in swaps]),
                "answers_before": sum(len(s.before_ms) for s in swaps),
                "answers_during": sum(len(s.during_ms) for s in swaps),
                "p99_before_ms": pooled_before,
                "p99_during_ms": pooled_during,
                "p99_during_over_before": (
                    pooled_during / pooled_before if pooled_before and pooled_during else None
                ),
                "per_swap_p99_ratio": report.spread(ratios),
                "failed_in_windows": sum(s.failed for s in swaps),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["summary"] = self.per_channel()
        values["failed_requests"] = sum(n for s, n in self.statuses.items() if s != "200")
        return values

    def table(self) -> str:
        columns = [
            report.Column("channel", 8, "<"),
            report.Column("n", 3),
            report.Column("confirmed s: median (min-max)", 30),
            report.Column("1st answer s", 12),
            report.Column("p99 ms before", 13),
            report.Column("during", 7),
            report.Column("ratio", 6),
            report.Column("per swap (min-max)", 19),
            report.Column("answers", 8),
            report.Column("failed", 6),
        ]
        rows = []
        for channel, figures in self.per_channel().items():
            confirmed = figures["confirmed_seconds"]
            missing = f" ({confirmed['missing']} missing)" if confirmed.get("missing") else ""
            rows.append(
                [
                    channel,
                    str(confirmed["n"]),
                    _cell(confirmed, ".3f") + missing,
                    report.fmt(figures["first_answer_seconds"].get("median"), ".3f"),
                    report.fmt(figures["p99_before_ms"], ".0f"),
                    report.fmt(figures["p99_during_ms"], ".0f"),
                    report.fmt(figures["p99_during_over_before"], ".2f"),
                    _cell(figures["per_swap_p99_ratio"], ".2f"),
                    f"{figures['answers_before']}/{figures['answers_during']}",
                    str(figures["failed_in_windows"]),
                ]
            )
        return report.format_table(columns, rows)


def _cell(spread: dict[str, Any], spec: str) -> str:
    if not spread.get("n"):
        return "-"
    low, high = report.fmt(spread["min"], spec), report.fmt(spread["max"], spec)
    return f"{report.fmt(spread['median'], spec)} ({low}-{high})"


# ---------------------------------------------------------------------------------------------- run


@contextlib.contextmanager
def running_api(settings: ApiSettings, model: ModelConfig) -> Iterator[tuple[str, Any]]:
    """The API under uvicorn in this process: its base URL and its runtime."""
    server = ModelServer(load_base(model), Catalog(titles={}, profiles={}), batch_size=8)
    app = create_app(settings, model_server=server)
    with serve(app) as base_url:
        yield base_url, app.state.runtime


@dataclass(frozen=True)
class HotswapConfig:
    """What one run measures (the command's options)."""

    rounds: int = 5  # promotions per channel, interleaved
    clients: int = 4  # load threads
    # the API's registry poll, and its look at the promotion stamp
    poll_seconds: float = 5.0
    stamp_poll_seconds: float = 0.05
    redis_url: str = "redis://127.0.0.1:6379/13"  # pub/sub (the channel is left out if it does not answer)
    # swaps in the memory measurement (0: none); whether to run the promotions under load at all
    memory_cycles: int = 3
    swaps: bool = True


def run(model: ModelConfig, config: HotswapConfig, command: str, echo: Any = print) -> HotswapResult:
    """The whole benchmark on ``model`` in a temporary home; ``command`` is recorded with the figures."""
    rounds, clients, memory_cycles, swaps = config.rounds, config.clients, config.memory_cycles, config.swaps
    poll, stamp_poll, redis_url = config.poll_seconds, config.stamp_poll_seconds, config.redis_url
    redis_up = redis_answers(redis_url)
    channels = [c for c in CHANNELS if c != "redis" or redis_up]
    result = HotswapResult(
        command=command,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        base=model.base,
        clients=clients,
        poll_seconds=poll,
        stamp_poll_seconds=stamp_poll,
        channels=channels if swaps else [],
        redis=f"up at {redis_url}" if redis_up else f"no answer at {redis_url}: channel left out",
    )
    spec = LoraSpec()  # the deployment's adapter shape
    with tempfile.TemporaryDirectory(prefix="e2u-hotswap-") as tmp:
        home = Path(tmp)
        count = max(1 + (len(channels) * rounds if swaps else 0), 1 + memory_cycles)
        echo(f"saving {count} random adapters ({model.base}, r={spec.r}) ...")
        folders = random_adapters(model, home / "adapters", count, spec)
        if memory_cycles > 0:
            echo(f"memory: a fresh process, {memory_cycles} swap(s) ...")
            result.memory = memory_in_fresh_process(model, folders, memory_cycles)
            echo(f"  {result.memory}")
        if not swaps:
            return result
        settings = api_settings(home, model.base, poll, stamp_poll, redis_url if redis_up else None)
        stack = seed_database(settings, folders, users=200)
        stamp = PromotionStamp(settings.promotion_stamp_path)
        publishers: dict[str, EventPublisher | None] = {
            "stamp": EventPublisher(None, stamp=stamp),
            "redis": EventPublisher(redis_url),
            "poll": None,
        }
        try:
            with running_api(settings, model) as (base_url, runtime):
                load = Load(base_url, stack.key, stack.users, clients)
                load.start()
                time.sleep(STEADY_SECONDS + 1.0)  # warm: the first requests encode prompts
                rng = random.Random(0)
                versions = iter(stack.versions[1:])
                done: list[tuple[str, int, str, float, float | None]] = []
                for round_ in range(rounds):
                    for channel in channels:  # interleaved, so that a slow spell hits every channel
                        version = next(versions)
                        time.sleep(STEADY_SECONDS + rng.uniform(0.0, poll))
                        seconds, committed = one_swap(
                            stack, load, runtime.process_id, publishers[channel], version, poll + 10.0
                        )
                        done.append((channel, round_, version, committed, seconds))
                        echo(f"  round {round_ + 1} {channel:5}: confirmed in {report.fmt(seconds, '.3f')} s")
                time.sleep(SETTLE_SECONDS + STEADY_SECONDS)
                load.stop()  # every answer of the last window is in: the slow ones count too
                result.swaps = [measure_swap(load, *swap) for swap in done]
                result.requests = len(load.answers)
                result.statuses = dict(Counter(a.status for a in load.answers))
        finally:
            stack.engine.dispose()
    return result


def command(
    base: Annotated[str, typer.Option(help="tiny, smollm2, or a local model folder")] = "tiny",
    rounds: Annotated[int, typer.Option(help="promotions per channel (interleaved)")] = 5,
    clients: Annotated[int, typer.Option(help="client threads asking for recommendations")] = 4,
    poll_seconds: Annotated[float, typer.Option(help="the API's registry poll")] = 5.0,
    stamp_poll_seconds: Annotated[float, typer.Option(help="the API's look at the promotion stamp")] = 0.05,
    redis_url: Annotated[
        str, typer.Option(help="Redis for the pub/sub channel")
    ] = "redis://127.0.0.1:6379/13",
    memory_cycles: Annotated[int, typer.Option(help="swaps in the memory measurement (0: none)")] = 3,
    swaps: Annotated[
        bool, typer.Option(help="run the promotions under load (--no-swaps: memory only)")
    ] = True,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
    out: Annotated[Path | None, typer.Option(help="JSON file")] = None,
) -> None:
    """Promotions under steady load (failed requests, p99 during vs before, time to the API's switch per
    channel) and the resident memory of the base model with one and two adapters."""
    torch.set_num_threads(threads)
    model = ModelConfig(base=base, cache_dir=str(REPO_MODELS), device="cpu")
    line = (
        f"python -m benchmarks hotswap --base {base} --rounds {rounds} --clients {clients} "
        f"--poll-seconds {poll_seconds} --stamp-poll-seconds {stamp_poll_seconds} "
        f"--memory-cycles {memory_cycles}" + ("" if swaps else " --no-swaps")
    )
    config = HotswapConfig(rounds, clients, poll_seconds, stamp_poll_seconds, redis_url, memory_cycles, swaps)
    result = run(model, config, line, typer.echo)
    suffix = "" if base == "tiny" else f"_{Path(base).name}"
    json_path = out or report.RESULTS / f"hotswap{suffix}{'' if swaps else '_memory'}.json"
    report.save_json(result.to_dict(), json_path)
    if swaps:
        typer.echo(result.table())
        typer.echo(f"requests {result.requests}, statuses {result.statuses}; redis {result.redis}")
    typer.echo(f"wrote {json_path}")
