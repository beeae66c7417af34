"""Promotion events: how a process that moved the active alias tells the API processes at once.

Two channels, both best effort (each API process also polls ``core.services.registry.active_adapter``):
Redis pub/sub when ``redis_url`` is set, and the promotion stamp, a file under the service's home that
every process on one machine (or one shared volume) sees.  The stamp is the embedded mode's channel: the
API and the worker are two processes there and there is no Redis."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # core.settings imports core.services, which imports this module
    from core.settings import Settings

log = logging.getLogger(__name__)

PROMOTION_CHANNEL = "e2u:adapter-promoted"


def promotion_event(
    version_id: str, counter: int, previous_version_id: str | None, kind: str
) -> dict[str, Any]:
    """The message API processes receive: which version is active now, under which alias counter."""
    return {
        "type": "adapter.promoted",
        "version_id": version_id,
        "counter": counter,
        "previous_version_id": previous_version_id,
        "kind": kind,
    }


class PromotionStamp:
    """The last promotion event, in a file: readers notice that its text changed.  The writer replaces the
    file whole (written beside it, then renamed), so a reader sees the old event or the new one, never half
    of one; every event names its alias counter, so two promotions never leave the same text."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, event: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        partial.write_text(json.dumps(event, sort_keys=True))
        os.replace(partial, self.path)

    def read(self) -> str | None:
        """The file's text; None before the first promotion."""
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None


class EventPublisher:
    """Publishes JSON events to the promotion stamp (when given) and to a Redis channel (when ``url``)."""

    def __init__(
        self, url: str | None, channel: str = PROMOTION_CHANNEL, stamp: PromotionStamp | None = None
    ) -> None:
        self.url = url
        self.channel = channel
        self.stamp = stamp

    def publish(self, event: dict[str, Any]) -> bool:
        """True when delivered on at least one channel; failures are logged, never raised (the poll is the
        fallback).  The stamp goes first: it is local and takes microseconds."""
        delivered = False
        if self.stamp is not None:
            try:
                self.stamp.write(event)
                delivered = True
            except OSError as error:
                log.warning("could not write %s to %s: %s", event.get("type"), self.stamp.path, error)
        if not self.url:
            return delivered
        try:
            import redis

            client = redis.Redis.from_url(self.url, socket_timeout=5)
            try:
                client.publish(self.channel, json.dumps(event, sort_keys=True))
            finally:
                client.close()
            return True
        except Exception as error:  # the database poll picks the change up anyway
            log.warning("could not publish %s to %s: %s", event.get("type"), self.channel, error)
            return delivered


def promotion_publisher(settings: Settings) -> EventPublisher:
    """The publisher a process with ``settings`` announces promotions with: the stamp under its home, and
    Redis when ``redis_url`` is set."""
    return EventPublisher(settings.redis_url, stamp=PromotionStamp(settings.promotion_stamp_path))
