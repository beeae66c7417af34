"""The Celery app's configuration, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.beat import PersistentScheduler

from core.settings import Settings


def test_the_beat_opens_its_schedule_on_a_fresh_home_with_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # found by the drills: with Redis as the broker nothing made E2U_HOME/celery, so the beat inside a
    # worker on a fresh home died at start-up (FileNotFoundError) and no batch ever formed
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # importing the worker module builds its app
    from worker.celery_app import make_celery

    home = tmp_path / "fresh"
    broker = "redis://127.0.0.1:6379/15"
    app = make_celery(
        Settings(
            _env_file=None, environment="development", home=home, broker_url=broker, result_backend=broker
        )
    )
    scheduler = PersistentScheduler(app=app, schedule_filename=app.conf.beat_schedule_filename, lazy=False)
    try:
        assert "form-batches" in scheduler.schedule
    finally:
        scheduler.close()
    assert Path(app.conf.beat_schedule_filename).parent == (home / "celery").resolve()
