"""Request and response bodies of recommendations, scores and ratings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from app.schemas import EntityId, request_body
from core.ml.data import ID_MAX_LENGTH, ID_PATTERN

UserIdPath = Annotated[
    str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="the user's id")
]


class RecommendationRequest(BaseModel):
    model_config = request_body(
        {"user_id": "196", "k": 5},
        {"user_id": "196", "k": 2, "candidates": ["1", "50", "181"]},
    )
    user_id: EntityId
    k: int = Field(10, ge=1, le=100, description="how many items to return")
    candidates: list[EntityId] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="items to rank; omitted: the most popular items the user has not rated",
    )
    pool_size: int = Field(
        100, ge=1, le=1000, description="how many unseen popular items to rank when no candidates"
    )


class RecommendedItem(BaseModel):
    item_id: str = Field(examples=["50"])
    title: str = Field(examples=["Star Wars (1977)"])
    score: float = Field(ge=0, le=1, description="P(the user likes the item)", examples=[0.83])


class RecommendationsPublic(BaseModel):
    user_id: str = Field(examples=["196"])
    adapter_version: str = Field(
        description="the adapter version that produced the scores", examples=["v1-3f2a9c1e"]
    )
    items: list[RecommendedItem]


class ScorePair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: EntityId
    item_id: EntityId


class ScoreRequest(BaseModel):
    model_config = request_body(
        {"pairs": [{"user_id": "196", "item_id": "242"}, {"user_id": "186", "item_id": "302"}]}
    )
    pairs: list[ScorePair] = Field(min_length=1, max_length=1000)


class PairScore(BaseModel):
    user_id: str = Field(examples=["196"])
    item_id: str = Field(examples=["242"])
    score: float = Field(ge=0, le=1, description="P(yes)", examples=[0.71])


class ScoresPublic(BaseModel):
    adapter_version: str = Field(examples=["v1-3f2a9c1e"])
    scores: list[PairScore]


class RatingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: EntityId
    rating: float = Field(ge=0, le=10, description="stars (MovieLens: 1-5)", examples=[4])
    timestamp: int | None = Field(None, ge=0, description="unix seconds; omitted: now", examples=[891350000])


class RatingsCreate(BaseModel):
    model_config = request_body({"ratings": [{"item_id": "1", "rating": 5}, {"item_id": "2", "rating": 2}]})
    ratings: list[RatingCreate] = Field(min_length=1, max_length=1000)


class RatingPublic(BaseModel):
    item_id: str
    rating: float
    timestamp: int
    label: int = Field(description="1 if the rating counts as a like")


class RatingsPublic(BaseModel):
    user_id: str
    added: list[RatingPublic]
