"""Recommendations, raw scores and new ratings.  Every read goes through the services, which leave out
data under a live erasure; every answer names the adapter version used.

The model routes take a place in the model server first (``ModelServer.admit``: 503 + Retry-After at once
when its queue is full), read what they need, then commit and give the connection and their admission
place back *before* any model work: a forward pass takes seconds, and a request waiting for it must hold
neither a pooled connection (the pool would run dry, and other routes with it) nor SQLite's write lock
(the key's last-use stamp), nor a place that an erasure request could use."""

from __future__ import annotations

import pandas as pd
from fastapi import APIRouter, Request, status
from sqlalchemy.orm import Session

from app.admission import leave_admission
from app.deps import ModelServerDep, RecommendKey, SessionDep, SettingsDep
from app.errors import InvalidRequest, error_responses
from app.recommendations.schemas import (
    PairScore,
    RatingPublic,
    RatingsCreate,
    RatingsPublic,
    RecommendationRequest,
    RecommendationsPublic,
    RecommendedItem,
    ScoreRequest,
    ScoresPublic,
    UserIdPath,
)
from core.ml.data import encode_history
from core.services import recommendations as service

router = APIRouter(tags=["recommendations"])


def _refuse_unknown(session: Session, item_ids: list[str], message: str) -> None:
    # a service refusal in waiting: its code would then be invalid_input, as for ratings (an API change)
    unknown = service.unknown_items(session, item_ids)
    if unknown:
        raise InvalidRequest(f"{message} {unknown}", items=unknown)


def _done_with_the_database(session: Session, request: Request) -> None:
    """End the request's transaction early (the edge's own commit then has nothing left to do) and let
    another request into the app in this one's place."""
    session.commit()  # also returns the pooled connection: the session opens a new one only if used again
    leave_admission(request.scope.get("state", {}))


@router.post(
    "/recommendations",
    response_model=RecommendationsPublic,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="Top-k items for a user",
)
def recommend(
    body: RecommendationRequest,
    request: Request,
    session: SessionDep,
    server: ModelServerDep,
    settings: SettingsDep,
    key: RecommendKey,
) -> RecommendationsPublic:
    """Rank the given candidates (or the user's unseen popular items) with the active adapter."""
    with server.admit():  # sync endpoint: FastAPI runs it in a worker thread
        history = service.user_history(session, body.user_id, settings.history_len)
        if body.candidates is not None:
            _refuse_unknown(session, body.candidates, "unknown candidate item(s)")
            candidates = body.candidates
        else:
            candidates = service.candidate_items(session, body.user_id, body.pool_size)
        catalog = service.prompt_catalog(
            session, [body.user_id], [*candidates, *(item for item, _ in history)]
        )
        _done_with_the_database(session, request)

        with server.lease() as lease:
            ranked = lease.recommend(body.user_id, history, candidates, body.k, catalog) if candidates else []
            items = [RecommendedItem(item_id=r.item_id, title=r.title, score=r.score) for r in ranked]
            return RecommendationsPublic(user_id=body.user_id, adapter_version=lease.version, items=items)


@router.post(
    "/scores",
    response_model=ScoresPublic,
    responses=error_responses(401, 403, 404, 422, 503),
    summary="P(yes) for (user, item) pairs",
)
def score(
    body: ScoreRequest,
    request: Request,
    session: SessionDep,
    server: ModelServerDep,
    settings: SettingsDep,
    key: RecommendKey,
) -> ScoresPublic:
    with server.admit():
        _refuse_unknown(session, [p.item_id for p in body.pairs], "unknown item(s)")
        users = sorted({p.user_id for p in body.pairs})
        histories = {u: encode_history(service.user_history(session, u, settings.history_len)) for u in users}
        catalog = service.prompt_catalog(session, users, [p.item_id for p in body.pairs], histories.values())
        _done_with_the_database(session, request)
        frame = pd.DataFrame(
            {
                "user_id": [p.user_id for p in body.pairs],
                "item_id": [p.item_id for p in body.pairs],
                "history": [histories[p.user_id] for p in body.pairs],
            }
        )
        with server.lease() as lease:
            values = lease.score(frame, catalog)
    scores = [
        PairScore(user_id=p.user_id, item_id=p.item_id, score=float(v))
        for p, v in zip(body.pairs, values, strict=True)
    ]
    return ScoresPublic(adapter_version=lease.version, scores=scores)


@router.post(
    "/users/{user_id}/ratings",
    response_model=RatingsPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 409, 422),
    summary="Add ratings of a user",
)
def add_ratings(
    user_id: UserIdPath, body: RatingsCreate, session: SessionDep, settings: SettingsDep, key: RecommendKey
) -> RatingsPublic:
    """New ratings join the prompts' histories at once; they are trained on at the next retrain only."""
    ratings = [service.NewRating(r.item_id, r.rating, r.timestamp) for r in body.ratings]
    rows = service.add_interactions(session, user_id, ratings, settings.history_len)
    added = [
        RatingPublic(item_id=r.item_id, rating=r.rating, timestamp=r.timestamp, label=r.label) for r in rows
    ]
    return RatingsPublic(user_id=user_id, added=added)
