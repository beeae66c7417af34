"""Container health checks of the queue edge, run by docker-compose.yml: ``python -m worker.health beat``
(the beat wrote its schedule file within the last few polls).  A worker's check is Celery's own
``celery -A worker.celery_app inspect ping -d NODE``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from core.settings import Settings
from worker.celery_app import beat_schedule_path

# polls the beat may miss before it counts as stuck (it writes its schedule file at each send)
MISSED_POLLS = 4


def beat_age_seconds(schedule: Path, now: float) -> float | None:
    """Seconds since the beat last wrote its schedule (a shelve: one or more files), None if never."""
    written = [path.stat().st_mtime for path in schedule.parent.glob(f"{schedule.name}*")]
    return now - max(written) if written else None


def beat_healthy(settings: Settings, now: float) -> tuple[bool, str]:
    limit = MISSED_POLLS * settings.batch_poll_seconds + 30
    age = beat_age_seconds(beat_schedule_path(settings), now)
    if age is None:
        return False, "the beat has not written its schedule yet"
    return age <= limit, f"the beat wrote its schedule {age:.0f} s ago (limit {limit:.0f} s)"


def main(argv: list[str]) -> int:
    if argv != ["beat"]:
        print("usage: python -m worker.health beat", file=sys.stderr)
        return 2
    healthy, reason = beat_healthy(Settings(), time.time())
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
