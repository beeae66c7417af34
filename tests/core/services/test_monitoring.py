"""The figures /metrics reads from the database: a job's time in each phase and its verdict class, written
by the pipeline as the job runs (so every worker's jobs count, wherever they ran)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from core.ml.model import LoadedModel
from core.services import batching, monitoring
from tests.core.services.test_pipeline import erase_and_run

RUN_PHASES = {"collect", "unlearn", "verify", "register", "promote", "purge", "certify"}


def test_a_job_records_its_phase_durations_and_verdict_class(
    session: Session, v1_id: str, tiny_model: LoadedModel, adapters_dir: Path
) -> None:
    assert monitoring.job_figures(session) == monitoring.JobFigures({}, {}, {}, {})
    _, job_id = erase_and_run(session, "u5", tiny_model, adapters_dir)
    figures = monitoring.job_figures(session)
    assert set(figures.phases) == RUN_PHASES
    for durations in figures.phases.values():
        assert durations.count == 1 and durations.total_seconds >= 0
        assert durations.buckets == sorted(durations.buckets) and durations.buckets[-1] <= 1
    job = batching.get_job(session, job_id)
    assert job.verdict_class == job.metrics["verdict"] == "no_prior_signal"
    assert figures.verdict_classes == {"no_prior_signal": 1}
    assert figures.jobs == {"succeeded": 1}
