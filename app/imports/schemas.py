"""Response body of an import (the request is multipart CSV files)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.schemas import response_body


class ImportPublic(BaseModel):
    """What an import changed: counts only."""

    model_config = response_body(
        {
            "items_added": 1682,
            "items_updated": 0,
            "items_unchanged": 0,
            "profiles_added": 943,
            "profiles_updated": 0,
            "ratings_added": 100000,
            "users_rated": 943,
        }
    )
    items_added: int = Field(ge=0)
    items_updated: int = Field(ge=0, description="existing items whose title or genres changed")
    items_unchanged: int = Field(ge=0)
    profiles_added: int = Field(ge=0)
    profiles_updated: int = Field(ge=0)
    ratings_added: int = Field(ge=0, description='new interactions, split "new" (trained on at a retrain)')
    users_rated: int = Field(ge=0, description="distinct users among the imported ratings")
