"""Liveness, readiness and Prometheus metrics (no API key: probes and scrapers call them)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import RuntimeDep
from app.system.schemas import Health, Readiness
from core.services import erasures as erasure_service

log = logging.getLogger(__name__)

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: no database or no active adapter"}},
    summary="Readiness",
)
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the database answers and an adapter is loaded."""
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = True
    except Exception:
        database = False
    server = runtime.model_server
    body = Readiness(
        ready=database and server.active_version is not None,
        database=database,
        adapter_version=server.active_version,
        adapters_loaded=server.loaded_versions(),
        watcher_error=runtime.watcher.last_error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(runtime: RuntimeDep) -> Response:
    runtime.metrics.observe_server(runtime.model_server)
    try:
        with runtime.sessions() as session:
            backlog = erasure_service.erasure_backlog(session, runtime.settings.deadline_risk_fraction)
        runtime.metrics.observe_erasures(backlog)
    except Exception:  # the database away: the process's own figures still answer; the backlog's keep
        log.exception("could not read the erasure backlog for /metrics")
    return runtime.metrics.render()
