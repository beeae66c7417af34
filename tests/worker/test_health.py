"""The queue edge's production settings: the beat's schedule file (its folder made whatever the broker)
and the beat's health check on its age; the two queues and the tasks' time limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.queue_contract import DEFAULT_QUEUE, FORM_BATCHES_TASK, RUN_JOB_TASK, UNLEARNING_QUEUE
from core.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("E2U_ENVIRONMENT", "development")  # importing the worker builds its Celery app
    return Settings(environment="development", home=tmp_path / "home", broker_url="redis://127.0.0.1:6379/15")


def test_the_beat_schedule_folder_exists_with_a_redis_broker(settings: Settings) -> None:
    from worker.celery_app import make_celery

    app = make_celery(settings)
    schedule = Path(app.conf.beat_schedule_filename)
    assert schedule.parent.is_dir() and schedule.parent == (settings.home / "celery").resolve()
    assert app.conf.beat_sync_every == 1  # written at each send: what the health check reads


def test_the_beat_is_healthy_only_while_it_writes_its_schedule(settings: Settings) -> None:
    from worker.celery_app import beat_schedule_path
    from worker.health import beat_healthy

    healthy, reason = beat_healthy(settings, now=1_000_000.0)
    assert not healthy and "not written" in reason
    written = beat_schedule_path(settings).with_suffix(".dat")  # a shelve's file (dbm.dumb here)
    written.write_bytes(b"")
    os.utime(written, (1_000_000.0, 1_000_000.0))
    assert beat_healthy(settings, now=1_000_010.0)[0]
    healthy, reason = beat_healthy(settings, now=1_000_000.0 + 4 * settings.batch_poll_seconds + 31)
    assert not healthy and "limit" in reason


def test_the_health_command_says_how_to_use_it(settings: Settings) -> None:
    from worker.health import main

    assert main(["worker"]) == 2


def test_gpu_jobs_and_light_tasks_go_to_their_own_queues_with_time_limits(settings: Settings) -> None:
    from worker.celery_app import make_celery

    conf = make_celery(settings).conf
    assert conf.task_routes[RUN_JOB_TASK]["queue"] == UNLEARNING_QUEUE
    assert conf.task_routes[FORM_BATCHES_TASK]["queue"] == DEFAULT_QUEUE != UNLEARNING_QUEUE
    assert conf.task_annotations[RUN_JOB_TASK]["time_limit"] == settings.visibility_timeout_seconds
    light = conf.task_annotations[FORM_BATCHES_TASK]
    assert light["soft_time_limit"] < light["time_limit"] < settings.visibility_timeout_seconds
