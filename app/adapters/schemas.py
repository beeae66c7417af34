"""Response and request bodies of adapter versions and the activation log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import TEXT_PATTERN, request_body, response_body
from core.db.models import VersionStatus


class AdapterVersionPublic(BaseModel):
    model_config = response_body(
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
    model_config = request_body({"reason": "utility regression in v3"})
    reason: str | None = Field(
        None, max_length=1000, pattern=TEXT_PATTERN, description="recorded in the activation log"
    )


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


class ImportAdapterRequest(BaseModel):
    model_config = request_body({"path": "/srv/customer/lora-v7", "split": "test"})
    path: str = Field(
        ..., min_length=1, max_length=1000, description="a PEFT LoRA folder on the service's machine"
    )
    base_sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="sha256 of the base weights it was trained on"
    )
    split: str = Field("test", pattern=r"^(train|valid|test|holdout)$", description="split to evaluate on")
