"""Signed webhooks when an erasure request ends (completed, or not_unlearned), in the Standard Webhooks
format: ``webhook-id`` (the message id, the same on every retry), ``webhook-timestamp`` (of the attempt)
and ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` under a ``whsec_`` secret
(signed by the ``standardwebhooks`` package).  The body names the request and its status only::

    {"type": "erasure_request.completed", "timestamp": "...", "data": {"request_id": "...", "status": "..."}}

One receiver for the deployment (``E2U_WEBHOOK_URL``, ``E2U_WEBHOOK_SECRET``): the secret stays in the
deployment's secret store, not in the database.

An outbox: ``record_events`` writes one delivery row per ended request that has none (the requests
table is the source of truth, so no event is lost to a crash between a job's commit and a send), and
``deliver_due`` sends those due, each attempt committed before and after its HTTP call (no transaction is
held open while a receiver answers).  A failed attempt is tried again after ``first_delay_seconds``,
doubling up to ``max_delay_seconds``; after ``max_attempts`` the delivery is ``failed`` (counted in
/metrics).  The worker's ``e2u.deliver_webhooks`` task runs both, on the beat's schedule.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from core.db.models import ErasureStatus, WebhookDelivery, WebhookStatus, utcnow
from core.db.repositories import webhooks as webhook_repo
from core.redaction import error_class

log = logging.getLogger(__name__)

# the statuses that end a request and are announced
ANNOUNCED = (ErasureStatus.COMPLETED, ErasureStatus.NOT_UNLEARNED)
SECRET_PREFIX = "whsec_"


class WebhookSecretError(ValueError):
    """A secret that is not ``whsec_`` + base64."""


def signer(secret: str) -> Webhook:
    """The signer of ``secret`` (``whsec_`` + base64 of at least 24 bytes)."""
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookSecretError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        webhook = Webhook(secret)
    except Exception as error:  # binascii.Error, or empty
        raise WebhookSecretError(
            f"a webhook secret is {SECRET_PREFIX} + base64 ({error_class(error)})"
        ) from None
    if len(webhook._whsecret) < 24:
        raise WebhookSecretError("a webhook secret holds at least 24 random bytes")
    return webhook


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: str
    max_attempts: int = 8
    first_delay_seconds: float = 30.0
    max_delay_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    announce_within: timedelta = timedelta(days=7)  # requests that ended earlier are not announced

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (1-based)."""
        return timedelta(seconds=min(self.first_delay_seconds * 2 ** (attempts - 1), self.max_delay_seconds))


def record_events(session: Session, config: WebhookConfig, now: datetime | None = None) -> int:
    """One outbox row per request that ended (``ANNOUNCED``) within ``config.announce_within`` and has
    none for that event; returns how many were added.  Flushes only."""
    when = now or utcnow()
    added = 0
    for request_id, status in webhook_repo.finished_without_event(
        session, ANNOUNCED, when - config.announce_within
    ):
        event_type = webhook_repo.EVENT_PREFIX + status
        delivery = WebhookDelivery(
            id=f"msg_{uuid.uuid4().hex}",
            event_type=event_type,
            request_id=request_id,
            payload={
                "type": event_type,
                "timestamp": when.isoformat(),
                "data": {"request_id": request_id, "status": status},
            },
            status=WebhookStatus.PENDING,
            attempts=0,
            created_at=when,
            next_attempt_at=when,
        )
        added += webhook_repo.add_once(session, delivery)
    return added


def signed_headers(
    config: WebhookConfig, delivery: WebhookDelivery, body: str, now: datetime
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": delivery.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer(config.secret).sign(delivery.id, now, body),
    }


Post = Callable[[str, str, dict[str, str], float], int]  # url, body, headers, timeout -> HTTP status


def http_post(url: str, body: str, headers: dict[str, str], timeout: float) -> int:
    return httpx.post(url, content=body.encode(), headers=headers, timeout=timeout).status_code


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def deliver_due(
    session: Session,
    config: WebhookConfig,
    checkpoint: Callable[[], None],
    now: Callable[[], datetime] = utcnow,
    post: Post = http_post,
    limit: int = 100,
) -> DeliveryReport:
    """Send the deliveries due now; ``checkpoint`` (the edge's commit) runs before each HTTP call (the
    claim) and after it (the outcome)."""
    report = DeliveryReport()
    for delivery in webhook_repo.due(session, now(), limit):
        started = now()
        # claimed for past one attempt's timeout: a concurrent sender skips it, a crash retries it then
        if not webhook_repo.claim(session, delivery, started + timedelta(seconds=2 * config.timeout_seconds)):
            continue
        checkpoint()
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
        status_code, error = None, None
        try:
            status_code = post(
                config.url, body, signed_headers(config, delivery, body, started), config.timeout_seconds
            )
        except httpx.HTTPError as failure:  # the text can name hosts and addresses: the class only
            error = error_class(failure)
        attempts, ended = delivery.attempts + 1, now()
        if status_code is not None and 200 <= status_code < 300:
            webhook_repo.record_attempt(
                session,
                delivery,
                status=WebhookStatus.DELIVERED,
                attempts=attempts,
                delivered_at=ended,
                last_status_code=status_code,
                last_error=None,
            )
            report.delivered.append(delivery.id)
        else:
            gave_up = attempts >= config.max_attempts
            webhook_repo.record_attempt(
                session,
                delivery,
                status=WebhookStatus.FAILED if gave_up else WebhookStatus.PENDING,
                attempts=attempts,
                next_attempt_at=ended + config.delay(attempts),
                last_status_code=status_code,
                last_error=error or f"HTTP {status_code}",
            )
            (report.failed if gave_up else report.retrying).append(delivery.id)
            log.warning(
                "webhook %s (%s): attempt %d failed: %s%s",
                delivery.id,
                delivery.event_type,
                attempts,
                delivery.last_error,
                "; given up" if gave_up else "",
            )
        checkpoint()
    return report


def list_deliveries(
    session: Session, status: WebhookStatus | None = None, limit: int = 100, offset: int = 0
) -> list[WebhookDelivery]:
    """The delivery records, newest first."""
    return webhook_repo.list_deliveries(session, status, limit, offset)
