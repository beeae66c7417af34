"""Liveness, readiness and Prometheus metrics (no API key: probes and scrapers call them)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.deps import RuntimeDep
from app.system.schemas import Health, Readiness
from core.services import erasures as erasure_service
from core.services import registry as registry_service

log = logging.getLogger(__name__)

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "not ready: no database, or not serving the registry's active version",
        }
    },
    summary="Readiness",
)
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the database answers and this process serves the registry's active version (read now):
    not while it still serves a superseded one (a swap pending, or a new version that failed to load)."""
    registry_version = None
    try:
        with runtime.sessions() as session:
            active = registry_service.active_adapter(session)
        database = True
        registry_version = None if active is None else active.version_id
    except Exception:
        database = False
    server = runtime.model_server
    serving = server.active_version
    body = Readiness(
        ready=database and serving is not None and serving == registry_version,
        database=database,
        adapter_version=serving,
        registry_version=registry_version,
        adapters_loaded=server.loaded_versions(),
        watcher_error=runtime.watcher.last_error,
        redis=runtime.redis_connected,
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
