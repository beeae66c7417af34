"""Request and response bodies of API keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas import TEXT_PATTERN, request_body


class ApiKeyCreate(BaseModel):
    model_config = request_body({"name": "backend", "scopes": ["recommend"]})
    name: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    scopes: list[Literal["recommend", "erase", "admin"]] = Field(min_length=1)


class ApiKeyCreated(BaseModel):
    name: str
    scopes: list[str]
    key: str = Field(description="shown once; only its hash is stored", examples=["e2u_Zq3..."])
