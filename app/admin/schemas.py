"""Response and request bodies of the admin endpoints: jobs, adapter versions, API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.db.models import JobStatus, VersionStatus


class JobPublic(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 3,
                    "status": "running",
                    "phase": "unlearning",
                    "progress": 0.42,
                    "created_at": "2026-01-05T10:05:00Z",
                    "attempts": 1,
                    "config": {"method": "e2urec", "method_config": {"alpha": 2.0, "w": 0.6}},
                    "thresholds": {"utility_margin": 0.02, "mia_margin": 0.1, "gold_margin": 0.05},
                    "metrics": {},
                    "parent_version_id": "v1-3f2a9c1e",
                    "request_ids": ["0b6f6f4e-3c1a-4d7e-9d0e-6a2f0f1b2c3d"],
                }
            ]
        },
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


class AdapterVersionPublic(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "v2-8c41d0aa",
                    "parent_id": "v1-3f2a9c1e",
                    "lineage": ["v2-8c41d0aa", "v1-3f2a9c1e"],
                    "base_model": "smollm2",
                    "sha256": "8c41d0aa...",
                    "status": "active",
                    "active": True,
                    "metrics": {"valid_auc": 0.71, "mia_auc": 0.52},
                    "config": {"method": "e2urec"},
                    "created_at": "2026-01-05T10:20:00Z",
                }
            ]
        },
    )
    id: str
    parent_id: str | None = None
    lineage: list[str] = Field(
        default_factory=list, description="this version and its ancestors, newest first"
    )
    base_model: str
    sha256: str
    status: VersionStatus
    active: bool = False
    metrics: dict[str, Any]
    config: dict[str, Any]
    job_id: int | None = None
    created_at: datetime
    promoted_at: datetime | None = None
    superseded_at: datetime | None = None
    destroyed_at: datetime | None = None


class AdapterVersionList(BaseModel):
    active_version_id: str | None
    versions: list[AdapterVersionPublic]


class PromoteRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "utility regression in v3"}]}
    )
    reason: str | None = Field(None, max_length=1000, description="recorded in the activation log")


class ActivationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    at: datetime
    version_id: str
    previous_version_id: str | None
    counter: int
    kind: str
    actor: str
    job_id: int | None = None
    reason: str | None = None


class ActivationList(BaseModel):
    events: list[ActivationPublic]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "backend", "scopes": ["recommend"]}]}
    )
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["recommend", "erase", "admin"]] = Field(min_length=1)


class ApiKeyCreated(BaseModel):
    name: str
    scopes: list[str]
    key: str = Field(description="shown once; only its hash is stored", examples=["e2u_Zq3..."])
