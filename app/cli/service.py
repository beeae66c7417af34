"""The service area: ``e2u init`` (first-start preparation) and ``e2u serve`` (the API and a worker)."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from app.cli.data import prepare
from app.cli.model import train_v1
from app.launcher import initialise, start_worker, stop_process, wait_for_worker
from app.main import create_app
from app.runtime import Runtime
from app.settings import ApiSettings, EmbeddedSettings
from core.ml.training import TrainConfig

QuickStepsOpt = Annotated[int, typer.Option(help="training steps of the quick-start adapter v1")]


def _initialise(settings: ApiSettings, quick_steps: int) -> None:
    typer.echo("preparing: database migrations, data, model and adapter v1 (first start only)")
    report = initialise(
        settings,
        prepare_data=lambda: prepare(settings),
        train_v1=lambda: train_v1(settings, None, TrainConfig.quick(quick_steps)),
    )
    if report.imported_interactions:
        typer.echo(f"imported {report.imported_interactions} interactions")
    typer.echo(f"active adapter version: {report.active_version}")
    typer.echo(f"environment: {settings.environment}; certificates signed by key {report.signing_key_id}")
    if report.dev_api_key_file:
        typer.echo(
            f"\ndevelopment API key (all scopes) written to {report.dev_api_key_file} (mode 0600):\n"
            f"    KEY=$(cat {report.dev_api_key_file})\n"
            "create more with `e2u apikey create --name NAME --scopes recommend,erase,admin`\n"
        )


def init(quick_steps: QuickStepsOpt = 60) -> None:
    """Migrate the database; on first start prepare data, model and adapter v1 and register them
    (development unless E2U_ENVIRONMENT=production)."""
    _initialise(EmbeddedSettings(), quick_steps)


def serve(
    quick_steps: QuickStepsOpt = 60,
    host: Annotated[str | None, typer.Option(help="default: E2U_HOST (127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="default: E2U_PORT (8000)")] = None,
    worker: Annotated[bool, typer.Option(help="also run a Celery worker (+ beat), a second process")] = True,
    prepare: Annotated[bool, typer.Option(help="run `e2u init` first")] = True,
) -> None:
    """Run the service: prepare what is missing, then the API and a real Celery worker; Ctrl-C stops both.
    Development unless E2U_ENVIRONMENT=production."""
    settings = EmbeddedSettings()
    host, port = host or settings.host, port or settings.port
    if prepare:
        _initialise(settings, quick_steps)
    process = None
    if worker:
        log_file = settings.home / "logs" / "worker.log"
        process = start_worker(settings, log_file)
        typer.echo(
            f"worker started (pid {process.pid}, log {log_file}); broker {settings.broker_url_resolved}"
        )
        try:
            wait_for_worker(process, log_file)
        except RuntimeError as error:
            stop_process(process)
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None

    def ready(runtime: Runtime) -> None:
        typer.echo(
            f"\ne2u is serving adapter {runtime.model_server.active_version} at http://{host}:{port}\n"
            f"API docs: http://{host}:{port}/docs   (Ctrl-C stops the API and the worker)\n"
        )

    try:
        # uvicorn's access log prints paths, which carry user ids: the app logs route templates
        # instead (logger ``e2u.access``); log_config=None: uvicorn's loggers write through the handler
        # of ``core.logs`` (text or JSON, with the request id)
        uvicorn.run(
            create_app(settings, on_ready=ready),
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            access_log=False,
            log_config=None,
        )
    finally:
        if process is not None:
            typer.echo("stopping the worker ...")
            code = stop_process(process)
            typer.echo(f"worker stopped ({code})")
