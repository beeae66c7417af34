"""The FastAPI application factory: ``uvicorn app.main:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool

from app.adapters.endpoints import router as adapters_router
from app.admission import AdmissionControl, BodyLimit, Upload
from app.api_keys.endpoints import router as api_keys_router
from app.audit.endpoints import router as audit_router
from app.deps import AuthFailureLimiter
from app.docs_ui import install_docs
from app.erasures.endpoints import admin_router as erasures_admin_router
from app.erasures.endpoints import router as erasures_router
from app.errors import install_error_handler
from app.imports.endpoints import router as imports_router
from app.jobs.endpoints import router as jobs_router
from app.keys.endpoints import router as keys_router
from app.middleware import RequestContext
from app.recommendations.endpoints import router as recommendations_router
from app.runtime import Runtime, build_runtime
from app.settings import ApiSettings, get_settings
from app.system.endpoints import router as system_router
from app.webhooks.endpoints import router as webhooks_router
from core.logs import configure_logging
from core.services import api_keys as api_key_service
from core.services.errors import Forbidden, Unauthorized
from core.serving import ModelServer
from core.settings import LogSettings

DESCRIPTION = """
Unlearning-as-a-service for an LLM recommender (E2URec).

* **recommendations**: top-k items and raw yes/no scores from the active LoRA adapter; every answer
  names the adapter version that produced it.
* **erasure requests**: file (idempotent), follow, cancel, and read the signed certificate.
* **admin**: unlearning jobs, adapter versions (promote, roll back), API keys, importing your own
  items and ratings (CSV).

Authenticate with an API key in the `X-API-Key` header (or `Authorization: Bearer`).  Keys carry
scopes: `recommend`, `erase`, `admin`.  Errors are JSON: `{"error": {"code", "message", "details"}}`.
"""


def create_app(
    settings: ApiSettings | None = None,
    model_server: ModelServer | None = None,
    on_ready: Callable[[Runtime], None] | None = None,
) -> FastAPI:
    """Build the app.  ``model_server``: an already loaded one (tests share one across apps); by default
    the base model named by the settings is loaded at start-up.  ``on_ready`` runs once it can serve."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime: Runtime = await run_in_threadpool(build_runtime, settings, model_server)
        await run_in_threadpool(runtime.start)
        app.state.runtime = runtime
        if on_ready is not None:
            on_ready(runtime)
        try:
            yield
        finally:
            await run_in_threadpool(runtime.stop)

    app = FastAPI(
        title="e2u: unlearning for LLM recommenders",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # app.docs_ui serves /docs from the installation; ReDoc's page needs a CDN
        redoc_url=None,
    )
    app.state.auth_failures = AuthFailureLimiter()
    app.state.verified_keys = api_key_service.VerifiedKeys(settings.api_key_cache_seconds)
    install_error_handler(app)
    v1 = APIRouter(prefix="/v1")
    v1.include_router(recommendations_router)
    v1.include_router(erasures_router)
    v1.include_router(erasures_admin_router)
    v1.include_router(jobs_router)
    v1.include_router(adapters_router)
    v1.include_router(api_keys_router)
    v1.include_router(imports_router)
    v1.include_router(audit_router)
    v1.include_router(webhooks_router)
    app.include_router(v1)
    app.include_router(system_router)
    app.include_router(keys_router)
    _limit_what_enters(app, settings)

    # outermost (added last): every answer, the refusals of the two above and unhandled errors included,
    # is counted and logged under its request id
    app.add_middleware(RequestContext)
    install_docs(app)

    return app


IMPORTS_PATH = "/v1/admin/imports"


def _limit_what_enters(app: FastAPI, settings: ApiSettings) -> None:
    """Admission control outside, then the body limit (Starlette: the middleware added last runs first;
    the metrics middleware added after these counts their refusals too)."""

    def admin_key(key: str) -> bool:
        runtime: Runtime = app.state.runtime
        with runtime.sessions() as session:
            try:
                api_key_service.authenticate(session, key, "admin")
            except (Unauthorized, Forbidden):
                return False
        return True

    # three CSV files of the import's limit each, plus the multipart framing
    imports = Upload(3 * settings.max_import_bytes + 2**16, admin_key)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, uploads={IMPORTS_PATH: imports})
    app.add_middleware(
        AdmissionControl,
        limit=settings.admission_limit or settings.db_pool.capacity,
        wait_seconds=settings.admission_wait_seconds,
        max_waiting=settings.admission_queue,
    )


def serve_app() -> FastAPI:
    """The factory the production API runs (`uvicorn app.main:serve_app --factory`, docker-compose.yml):
    each uvicorn process writes its log lines as ``E2U_LOG_FORMAT`` says (JSON: one object per line, with
    the request id) before the app is built; ``create_app`` leaves logging to its caller (tests, `e2u`)."""
    settings = LogSettings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app()
