"""What /metrics reads from the database at scrape time: the figures of every worker's jobs.

Why from the database: workers run on other hosts (GPU machines) and in Celery's child processes; a
per-process Prometheus registry there would need a scrape target per worker process (or
``PROMETHEUS_MULTIPROC_DIR`` on a shared disk, host by host), and its counters would restart with each
process.  The database already holds each job's phases and verdict, fenced by its lease (rows of an
attempt that lost its job are rolled back): any API process serves the same fleet-wide figures.  Alert on
``max`` of them across API processes, not ``sum``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.db.repositories import jobs as job_repo
from core.db.repositories import webhooks as webhook_repo

# seconds: a phase lasts from well under a second (collect on a small data set) to hours (an exact
# retrain on a large one)
PHASE_BUCKETS: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600)


@dataclass(frozen=True)
class PhaseDurations:
    """One phase's cumulative histogram: ``buckets[i]`` timings took at most ``PHASE_BUCKETS[i]``."""

    buckets: list[int]
    count: int
    total_seconds: float


@dataclass(frozen=True)
class JobFigures:
    phases: dict[str, PhaseDurations]
    verdict_classes: dict[str, int]  # jobs per verdict class of their candidate
    jobs: dict[str, int]  # jobs per status
    webhooks: dict[str, int]  # webhook deliveries per status


def job_figures(session: Session) -> JobFigures:
    histogram = job_repo.phase_duration_histogram(session, PHASE_BUCKETS)
    return JobFigures(
        phases={phase: PhaseDurations(*row) for phase, row in histogram.items()},
        verdict_classes=job_repo.count_by_verdict_class(session),
        jobs=job_repo.count_by_status(session),
        webhooks=webhook_repo.count_by_status(session),
    )
