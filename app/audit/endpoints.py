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

    def lines() -> Iterator[str]:
        # a session of its own: the request's closes when this function returns, before the body is sent
        with runtime.sessions() as session:
            for record in audit_service.export_audit(session, wanted):
                yield json.dumps(record, separators=(",", ":")) + "\n"

    return StreamingResponse(lines(), media_type=JSON_LINES)
