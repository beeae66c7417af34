"""Response bodies of unlearning jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.schemas import response_body
from core.db.models import JobStatus


class JobPublic(BaseModel):
    model_config = response_body(
        {
            "id": 3,
            "status": "running",
            "phase": "unlearning",
            "progress": 0.42,
            "created_at": "2026-01-05T10:05:00Z",
            "attempts": 1,
            "config": {"method": "e2urec", "method_config": {"alpha": 2.0, "w": 0.6}},
            "thresholds": {"alpha": 0.05, "power": 0.8, "effect_of_interest": 0.1, "utility_margin": 0.02},
            "metrics": {},
            "parent_version_id": "v1-3f2a9c1e",
            "request_ids": ["0b6f6f4e-3c1a-4d7e-9d0e-6a2f0f1b2c3d"],
        }
    )
    id: int
    status: JobStatus
    phase: str = Field(
        description="queued, collect, augment, unlearn, verify, register, promote, purge, certify, done"
    )
    progress: float = Field(ge=0, le=1)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    attempts: int
    config: dict[str, Any]
    thresholds: dict[str, Any]
    metrics: dict[str, Any]
    verdict: str | None = None
    failure_reason: str | None = None
    parent_version_id: str | None = None
    child_version_id: str | None = None
    request_ids: list[str] = Field(default_factory=list)


class JobList(BaseModel):
    jobs: list[JobPublic]


class TriggerResult(BaseModel):
    job_ids: list[int] = Field(
        description="jobs formed now and sent to the workers (empty: nothing was queued)"
    )
