"""The audit log's export (admin scope): JSON lines, streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.deps import AdminKey, RuntimeDep
from app.errors import error_responses
from core.services import audit as audit_service

router = APIRouter(prefix="/admin/audit-log", tags=["admin"])

JSON_LINES = "application/x-ndjson"


@router.get(
    "",
    response_class=StreamingResponse,
    responses={
        200: {"content": {JSON_LINES: {}}, "description": "one JSON object per line, oldest first"},
        **error_responses(401, 403, 422),
    },
    summary="Export the audit log (JSON lines)",
)
def export_audit_log(
    runtime: RuntimeDep,
    key: AdminKey,
    since: Annotated[datetime | None, Query(description="entries at or after (with offset)")] = None,
    until: Annotated[datetime | None, Query(description="entries before (with offset)")] = None,
    kind: Annotated[
        list[str], Query(max_length=50, description="actions or their prefixes: erasure, api_key.created")
    ] = [],  # noqa: B006 (FastAPI copies defaults)
) -> StreamingResponse:
    """Each line: ``{id, at, actor, action, subject_type, subject_id, details}``.  The audit log holds no
    user ids (request ids and salted hashes only)."""
    wanted = audit_service.AuditFilter(since, until, audit_service.kinds_of(kind))
    # a session of its own, closed when the body ends (the request's closes when this function returns);
    # the first page is read here, so that a failing query is answered as an error, not a cut-off body
    session = runtime.sessions()
    records = audit_service.export_audit(session, wanted)
    try:
        first = next(records, None)
    except BaseException:
        session.close()
        raise

    def lines() -> Iterator[str]:
        try:
            if first is None:
                return
            yield json.dumps(first, separators=(",", ":")) + "\n"
            for record in records:
                yield json.dumps(record, separators=(",", ":")) + "\n"
        finally:
            session.close()

    return StreamingResponse(lines(), media_type=JSON_LINES)
