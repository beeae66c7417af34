"""The worker's webhook task: on the light queue, on the beat's schedule once a receiver is configured; it
records the events of ended requests and sends them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.db.models import ErasureStatus, utcnow
from core.queue_contract import DEFAULT_QUEUE, DELIVER_WEBHOOKS_TASK
from core.services import erasures
from core.settings import Settings
from tests.core.services.test_webhooks import SECRET, Receiver, receiver, verify_by_spec  # noqa: F401


@pytest.mark.usefixtures("seeded")
def test_the_task_records_and_sends_the_events(
    session: Session,
    db_url: str,
    receiver: Receiver,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # importing the worker builds its Celery app
    from worker import celery_app, tasks

    configured = Settings(
        environment="development",
        home=tmp_path,
        database_url=db_url,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
    )
    monkeypatch.setattr(tasks, "settings", lambda: configured)
    request, _ = erasures.create_erasure_request(session, "u3", None, erasures.IntakeConfig(salt="s"))
    request.status, request.completed_at = ErasureStatus.COMPLETED, utcnow()
    session.commit()
    assert tasks.deliver_webhooks() == {"recorded": 1, "delivered": 1, "retrying": 0, "failed": 0}
    assert tasks.deliver_webhooks() == {"recorded": 0, "delivered": 0, "retrying": 0, "failed": 0}
    [(headers, body)] = receiver.received
    verify_by_spec(headers, body)

    assert celery_app.beat_schedule(configured)["deliver-webhooks"]["task"] == DELIVER_WEBHOOKS_TASK
    assert "deliver-webhooks" not in celery_app.beat_schedule(Settings(environment="development"))
    assert celery_app.celery_app.conf.task_routes[DELIVER_WEBHOOKS_TASK] == {"queue": DEFAULT_QUEUE}


def test_webhook_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="set together"):
        Settings(environment="development", webhook_url="http://127.0.0.1:1/h")
    with pytest.raises(ValueError, match="E2U_WEBHOOK_SECRET: a webhook secret starts with"):
        Settings(environment="development", webhook_url="http://127.0.0.1:1/h", webhook_secret="plain")
