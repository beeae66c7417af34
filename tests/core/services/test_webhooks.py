"""Signed webhooks when erasure requests end, delivered to a local HTTP receiver that checks each
signature by the Standard Webhooks spec (its own HMAC, and the reference package), with retries and
back-off and a record of each delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from core.db.models import ErasureStatus, WebhookDelivery, WebhookStatus, utcnow
from core.services import erasures, webhooks

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()


class Receiver:
    """A local HTTP endpoint: answers the statuses queued in ``answers`` (then 204), keeps what came."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()


def verify_by_spec(headers: dict[str, str], body: bytes) -> None:
    """The spec's check, written out: v1 = base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


def _ended(session: Session, user: str, status: ErasureStatus, now: datetime) -> str:
    request, _ = erasures.create_erasure_request(
        session, user, None, erasures.IntakeConfig(salt="s"), now=now
    )
    request.status = status
    if status == ErasureStatus.COMPLETED:
        request.completed_at = now
    else:
        request.failed_at = now
    session.commit()
    return request.id


@pytest.mark.usefixtures("seeded")
def test_ended_requests_are_announced_signed_and_retried_with_back_off(
    session: Session, receiver: Receiver
) -> None:
    now = utcnow()
    completed = _ended(session, "u3", ErasureStatus.COMPLETED, now)
    not_unlearned = _ended(session, "u4", ErasureStatus.NOT_UNLEARNED, now)
    erasures.create_erasure_request(session, "u5", None, erasures.IntakeConfig(salt="s"), now=now)  # open
    session.commit()
    config = webhooks.WebhookConfig(receiver.url, SECRET, max_attempts=3, first_delay_seconds=30)

    assert webhooks.record_events(session, config, now) == 2
    session.commit()
    assert webhooks.record_events(session, config, now) == 0  # once per event
    receiver.answers = [503]  # the first attempt fails
    first = webhooks.deliver_due(session, config, session.commit, now=lambda: now)
    assert len(first.delivered) == 1 and len(first.retrying) == 1
    retried = session.get(WebhookDelivery, first.retrying[0])
    assert retried is not None and retried.status == WebhookStatus.PENDING
    assert (retried.attempts, retried.last_status_code, retried.last_error) == (1, 503, "HTTP 503")
    assert retried.next_attempt_at == now + timedelta(seconds=30)
    # not due before its back-off
    assert webhooks.deliver_due(session, config, session.commit, now=lambda: now + timedelta(seconds=29)) == (
        webhooks.DeliveryReport()
    )
    later = now + timedelta(seconds=31)
    second = webhooks.deliver_due(session, config, session.commit, now=lambda: later)
    assert second.delivered == [retried.id]

    assert len(receiver.received) == 3
    bodies = []
    for headers, body in receiver.received:
        verify_by_spec(headers, body)
        Webhook(SECRET).verify(body, headers)  # the reference implementation agrees
        bodies.append(json.loads(body))
    # the retry is the same message (same id and body), signed anew
    assert receiver.received[0][0]["webhook-id"] in {h["webhook-id"] for h, _ in receiver.received[1:]}
    events = {(b["type"], b["data"]["request_id"], b["data"]["status"]) for b in bodies}
    assert events == {
        ("erasure_request.completed", completed, "completed"),
        ("erasure_request.not_unlearned", not_unlearned, "not_unlearned"),
    }
    assert all(
        set(b) == {"type", "timestamp", "data"} and set(b["data"]) == {"request_id", "status"} for b in bodies
    )
    assert not any(user in body.decode() for _, body in receiver.received for user in ("u3", "u4"))
    session.expire_all()
    assert {d.status for d in webhooks.list_deliveries(session)} == {WebhookStatus.DELIVERED}


@pytest.mark.usefixtures("seeded")
def test_a_delivery_is_given_up_after_its_attempts(session: Session, receiver: Receiver) -> None:
    now = utcnow()
    _ended(session, "u3", ErasureStatus.COMPLETED, now)
    config = webhooks.WebhookConfig(receiver.url, SECRET, max_attempts=2, first_delay_seconds=10)
    webhooks.record_events(session, config, now)
    session.commit()
    receiver.answers = [500, 500]
    webhooks.deliver_due(session, config, session.commit, now=lambda: now)
    report = webhooks.deliver_due(session, config, session.commit, now=lambda: now + timedelta(seconds=11))
    assert len(report.failed) == 1
    [delivery] = webhooks.list_deliveries(session, WebhookStatus.FAILED)
    assert delivery.attempts == 2
    assert webhooks.deliver_due(session, config, session.commit, now=lambda: now + timedelta(days=1)) == (
        webhooks.DeliveryReport()
    )


@pytest.mark.usefixtures("seeded")
def test_an_unreachable_receiver_is_recorded_by_error_class(session: Session) -> None:
    now = utcnow()
    _ended(session, "u3", ErasureStatus.COMPLETED, now)
    config = webhooks.WebhookConfig("http://127.0.0.1:9/hooks", SECRET, timeout_seconds=2)
    webhooks.record_events(session, config, now)
    session.commit()
    report = webhooks.deliver_due(session, config, session.commit, now=lambda: now)
    [delivery] = webhooks.list_deliveries(session)
    assert report.retrying == [delivery.id] and delivery.last_error == "ConnectError"


@pytest.mark.parametrize("secret", ["not-whsec", "whsec_***", "whsec_" + base64.b64encode(b"short").decode()])
def test_a_bad_secret_is_refused_with_the_reason(secret: str) -> None:
    with pytest.raises(webhooks.WebhookSecretError, match="webhook secret"):
        webhooks.signer(secret)
