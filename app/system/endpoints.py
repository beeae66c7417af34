"""Liveness, readiness and Prometheus metrics (no API key: probes and scrapers call them)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.deps import RuntimeDep
from app.system.schemas import Health, Readiness
from core.services import erasures as erasure_service
from core.services import monitoring
from core.services import registry as registry_service
from core.services import suppression as suppression_service

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
            "description": "not ready: no database, the suppression ledger not yet applied, or not serving "
            "the registry's active version",
        }
    },
    summary="Readiness",
)
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the database answers, has applied the whole suppression ledger, and this process serves
    the registry's active version (read now), not destroyed: not while it still serves a superseded one (a
    swap pending, or a new version that failed to load)."""
    registry_version = None
    ledger_applied = servable = False
    ledger = runtime.settings.suppression_ledger
    try:
        with runtime.sessions() as session:
            ledger_applied = suppression_service.ledger_status(session, ledger).caught_up
        if not ledger_applied:  # a restored database: replay before serving (tried again at each probe)
            runtime.replay_ledger()
        with runtime.sessions() as session:
            if not ledger_applied:
                ledger_applied = suppression_service.ledger_status(session, ledger).caught_up
            active = registry_service.active_adapter(session)
            # a replay destroys an active version that carried replayed data: never ready on it
            servable = (
                active is not None
                and registry_service.get_version(session, active.version_id).destroyed_at is None
            )
        database = True
        registry_version = None if active is None else active.version_id
    except Exception:
        database = False
    server = runtime.model_server
    serving = server.active_version
    body = Readiness(
        ready=database
        and ledger_applied
        and servable
        and serving is not None
        and serving == registry_version,
        database=database,
        suppression_ledger_applied=ledger_applied,
        adapter_version=serving,
        registry_version=registry_version,
        adapters_loaded=server.loaded_versions(),
        watcher_error=runtime.watcher.last_error,
        process_id=runtime.process_id,
        redis=runtime.redis_connected,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(runtime: RuntimeDep) -> Response:
    runtime.metrics.observe_server(runtime.model_server)
    try:
        with runtime.sessions() as session:
            backlog = erasure_service.erasure_backlog(session, runtime.settings.deadline_risk_fraction)
            jobs = monitoring.job_figures(session)
        runtime.metrics.observe_erasures(backlog)
        runtime.metrics.observe_jobs(jobs)
    except Exception:  # the database away: the process's own figures still answer; the database's keep
        log.exception("could not read the erasure backlog and the jobs' figures for /metrics")
    return runtime.metrics.render()
