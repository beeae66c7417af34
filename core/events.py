"""Promotion events on Redis pub/sub.  Embedded mode has no Redis: API processes then poll
``core.services.registry.active_adapter`` instead, so publishing is best effort."""

from __future__ import annotations

import json
import logging
from typing import Any

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


class EventPublisher:
    """Publishes JSON events to a Redis channel; with ``url`` None it does nothing."""

    def __init__(self, url: str | None, channel: str = PROMOTION_CHANNEL) -> None:
        self.url = url
        self.channel = channel

    def publish(self, event: dict[str, Any]) -> bool:
        """True when delivered to Redis; failures are logged, never raised (the poll is the fallback)."""
        if not self.url:
            return False
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
            return False
