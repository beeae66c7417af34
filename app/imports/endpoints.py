"""``POST /v1/admin/imports``: bring your own catalog and ratings as CSV files (multipart)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status

from app.deps import AdminKey, SessionDep, SettingsDep, actor
from app.errors import PayloadTooLarge, error_responses
from app.imports.schemas import ImportPublic
from core.ml.data import CsvSource
from core.services import imports as service

router = APIRouter(prefix="/admin/imports", tags=["admin"])


def _source(upload: UploadFile, default_name: str, limit_bytes: int) -> CsvSource:
    """The upload as a stream (Starlette spools a large one to disk): the import reads it a row at a time,
    never whole into memory."""
    name = upload.filename or default_name
    size = upload.file.seek(0, os.SEEK_END)
    upload.file.seek(0)
    if size > limit_bytes:
        raise PayloadTooLarge(f"{name}: larger than {limit_bytes} bytes (E2U_MAX_IMPORT_BYTES)", file=name)
    return CsvSource(name, stream=upload.file)


@router.post(
    "",
    response_model=ImportPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 409, 413, 422),
    summary="Import your own items and ratings (CSV files)",
)
def import_data(
    session: SessionDep,
    settings: SettingsDep,
    key: AdminKey,
    ratings: Annotated[
        UploadFile,
        File(
            description="CSV with header `user,item,rating,timestamp` (unix seconds; MovieLens' "
            "`userId,movieId,rating,timestamp` too) or ML-1M's `ratings.dat` (`::`, no header)"
        ),
    ],
    items: Annotated[
        UploadFile,
        File(description="CSV with header `item,title[,genres]` (or `movieId,title,genres`) or `movies.dat`"),
    ],
    users: Annotated[
        UploadFile | None, File(description="optional CSV with header `user[,age,gender,occupation]`")
    ] = None,
) -> ImportPublic:
    """All or nothing, streamed (any size in bounded memory).  Ratings may be half stars; a rating above 3
    is a like.  New items are added and existing ones get the file's title and genres; ratings
    become new interactions (split "new"), which ratings may also name items already in the catalog.

    Refused, with the file, line and column in `error.details`: a malformed file (422), a rating of a
    (user, item) already stored or any row under an erasure request, pending or completed (409,
    `import_refused`).  Example:

        curl -H "X-API-Key: $KEY" -F ratings=@ratings.csv -F items=@items.csv \\
             http://127.0.0.1:8000/v1/admin/imports
    """
    limit = settings.max_import_bytes
    report = service.import_data(
        session,
        _source(ratings, "ratings.csv", limit),
        _source(items, "items.csv", limit),
        _source(users, "users.csv", limit) if users is not None else None,
        service.ImportConfig(settings.certificate_salt, settings.history_len),
        actor=actor(key),
    )
    return ImportPublic.model_validate(report)
