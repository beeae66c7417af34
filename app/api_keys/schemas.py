"""Request and response bodies of API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas import TEXT_PATTERN, request_body
from core.services.api_keys import DURATION_PATTERN


class ApiKeyCreate(BaseModel):
    model_config = request_body({"name": "backend", "scopes": ["recommend"]})
    name: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    scopes: list[Literal["recommend", "erase", "admin"]] = Field(min_length=1)
    expires_in: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="how long the key is valid: minutes, hours or days (30m, 12h, 90d); none: until revoked",
        examples=["90d"],
    )


class ApiKeyCreated(BaseModel):
    name: str
    scopes: list[str]
    expires_at: datetime | None
    key: str = Field(description="shown once; only its hash is stored", examples=["e2u_Zq3..."])


class ApiKeyView(BaseModel):
    """A key as listed: never the key itself (the service keeps only its hash), only its first characters."""

    id: int
    name: str
    prefix: str = Field(
        description="the key's first characters, to tell keys apart", examples=["e2u_Zq3abcd"]
    )
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = Field(description="when it last authenticated (to the minute)")
    revoked_at: datetime | None
    expires_at: datetime | None = Field(description="when it stops authenticating (none: never)")

    model_config = {"from_attributes": True}
