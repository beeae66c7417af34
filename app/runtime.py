"""What one API process holds for its lifetime: settings, database sessions, the model server kept on
the registry's active adapter (poll, promotion stamp, Redis pub/sub) and confirming what it serves, and the
task sender.  Built by the app's lifespan."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.metrics import ApiMetrics
from app.queue import TaskSender
from app.settings import ApiSettings
from core.db.engine import checkpoint_wal, engine_for, session_factory
from core.db.models import utcnow
from core.db.repositories import serving as serving_repo
from core.events import PROMOTION_CHANNEL, PromotionStamp
from core.ml.model import ModelConfig, load_base
from core.ml.prompts import Catalog
from core.services import registry as registry_service
from core.services import suppression as suppression_service
from core.serving import ActiveAdapter, AdapterWatcher, Batching, ModelServer

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: ApiSettings
    engine: Engine
    sessions: sessionmaker[Session]
    model_server: ModelServer
    watcher: AdapterWatcher
    tasks: TaskSender
    process_id: str = ""
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    _redis: RedisListener | None = None
    stamp_listener: StampListener | None = None

    def start(self) -> None:
        self.replay_ledger()  # a restored backup applies the suppression ledger before serving anything
        if self.settings.promotion_stamp_poll_seconds > 0:
            # before the first check: a promotion announced between that check and the listener's
            # first look must still wake the watcher
            stamp = PromotionStamp(self.settings.promotion_stamp_path)
            self.stamp_listener = StampListener(
                stamp, self.watcher.wake, self.settings.promotion_stamp_poll_seconds
            )
        self.watcher.tick()  # serve (and confirm) the active version from the first request on
        self.watcher.start()
        if self.stamp_listener is not None:
            self.stamp_listener.start()
        if self.settings.redis_url:
            self._redis = RedisListener(self.settings.redis_url, self.watcher.wake)
            self._redis.start()

    def replay_ledger(self) -> None:
        """Apply the suppression ledger if the database has not (readiness fails until it has)."""
        try:
            with self.sessions() as session:
                report = suppression_service.ensure_replayed(
                    session, self.settings.suppression_ledger, utcnow()
                )
                session.commit()
        except Exception:  # the database away: /readyz says so, and the next readiness probe retries
            log.exception("could not replay the suppression ledger")
            return
        if report is not None:
            checkpoint_wal(self.engine)

    def stop(self) -> None:
        self.watcher.stop()
        if self.stamp_listener is not None:
            self.stamp_listener.stop()
        if self._redis is not None:
            self._redis.stop()

    @property
    def redis_connected(self) -> bool | None:
        """Whether the promotion subscription is up now (None: no Redis configured)."""
        return None if self._redis is None else self._redis.connected


def resolver(sessions: sessionmaker[Session]) -> ActiveAdapter | None:
    with sessions() as session:
        active = registry_service.active_adapter(session)
    if active is None:
        return None
    return ActiveAdapter(active.version_id, Path(active.artifact_path), active.sha256)


def new_process_id() -> str:
    """This serving process's name in the confirmations: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def confirmer(sessions: sessionmaker[Session], process_id: str) -> Callable[[str], None]:
    """Records (and commits) that ``process_id`` serves a version: the watcher's ``confirm``."""

    def confirm(version: str) -> None:
        with sessions() as session:
            if serving_repo.confirm(session, process_id, version, utcnow()):
                log.info("confirmed serving %s as %s", version, process_id)
            session.commit()

    return confirm


def model_config(settings: ApiSettings) -> ModelConfig:
    """The base model and prompt this API serves with."""
    return ModelConfig(
        base=settings.base_model, cache_dir=str(settings.models_dir), prompt_file=settings.prompt_file_name
    )


def build_model_server(settings: ApiSettings) -> ModelServer:
    """Load the base model (the adapter comes from the watcher).  The default prompt catalog is empty:
    every request reads the titles and profiles it needs (``prompt_catalog``), so the process holds no
    copy of the catalogue, whose size would otherwise set the API's memory."""
    loaded = load_base(model_config(settings))
    return ModelServer(
        loaded,
        Catalog(titles={}, profiles={}),
        batch_size=settings.inference_batch_size,
        rank_batch_size=settings.rank_batch_size,
        batching=batching_for(settings, loaded.device),
    )


def batching_for(settings: ApiSettings, device: torch.device) -> Batching:
    """How requests share forward passes (README "Settings"): across requests only on a GPU unless
    ``E2U_BATCH_ACROSS_REQUESTS`` says otherwise (on the CPU it gained no throughput and raised p50)."""
    across = (
        device.type == "cuda" if settings.batch_across_requests is None else settings.batch_across_requests
    )
    return Batching(
        across, settings.model_batch_rows, settings.model_batch_wait_seconds, settings.model_queue
    )


def build_runtime(settings: ApiSettings, model_server: ModelServer | None = None) -> Runtime:
    engine = engine_for(settings.database_url_resolved, settings.db_pool)
    sessions = session_factory(engine, settings.keyring())
    server = model_server or build_model_server(settings)
    process_id = new_process_id()
    watcher = AdapterWatcher(
        server,
        lambda: resolver(sessions),
        poll_seconds=settings.adapter_poll_seconds,
        confirm=confirmer(sessions, process_id),
    )
    return Runtime(settings, engine, sessions, server, watcher, TaskSender(settings), process_id)


class StampListener:
    """Wakes the watcher when the promotion stamp's text changes (``core.events.PromotionStamp``): the
    embedded worker's promotions reach this process within ``interval_seconds`` without Redis.  What the
    stamp says when the listener is made is its baseline: only later promotions wake."""

    def __init__(
        self, stamp: PromotionStamp, on_message: Callable[[], None], interval_seconds: float
    ) -> None:
        self.stamp = stamp
        self.on_message = on_message
        self.interval_seconds = interval_seconds
        self._failing = False  # warn once per stretch of failed reads, not every interval
        self._last = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promotion-stamp", daemon=True)
        self.received = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _read(self) -> str | None:
        try:
            text = self.stamp.read()
        except OSError as error:  # unreadable now: the next look tries again, the poll covers meanwhile
            if not self._failing:
                log.warning(
                    "promotion stamp %s: %s (the registry poll covers until it reads again)",
                    self.stamp.path,
                    error,
                )
            self._failing = True
            return None
        self._failing = False
        return text

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            text = self._read()
            if text is not None and text != self._last:
                self._last = text
                self.received += 1
                log.info("promotion stamp: %s", text)
                self.on_message()


class RedisListener:
    """Subscribes to promotion events and wakes the watcher; reconnects with a back-off on failure."""

    def __init__(self, url: str, on_message: Callable[[], None], channel: str = PROMOTION_CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self.on_message = on_message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promotion-listener", daemon=True)
        self.received = 0
        self.connected = False  # subscribed and reading now (readiness reports it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import redis

        delay = 1.0
        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=10)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.connected, delay = True, 1.0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self.received += 1
                        log.info("promotion event: %s", json.loads(message["data"]))
                        self.on_message()
                pubsub.close()
                client.close()
            except Exception as error:  # Redis away: the poll still follows promotions
                self.connected = False
                log.warning("promotion listener: %s; retrying in %.0f s", error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
