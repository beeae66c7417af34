"""Bodies of the health and readiness probes."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    database: bool
    suppression_ledger_applied: bool = Field(
        False, description="the database has applied every entry of the suppression ledger (docs/privacy.md)"
    )
    adapter_version: str | None = Field(
        description="the version serving new requests", examples=["v1-3f2a9c1e"]
    )
    registry_version: str | None = Field(
        None, description="the registry's active version (ready only when it is the one serving)"
    )
    adapters_loaded: list[str] = Field(
        description="versions in memory (the active one, plus any finishing requests)"
    )
    watcher_error: str | None = Field(None, description="the last failure to follow the registry, if any")
    process_id: str = Field(
        "", description="the API process that answered (host:pid:random), as named in serving confirmations"
    )
    redis: bool | None = Field(
        None,
        description="whether the subscription to promotion messages is up (null: no Redis configured); not"
        " a condition of readiness: the registry poll follows promotions without it",
    )
