"""The ``e2u`` command line, one module per area: ``data``, ``model`` (train, evaluate, recommend),
``service`` (init, serve), ``api_keys``, ``certificates`` (and ``keys``); ``bench`` is mounted from
``benchmarks.cli``.
An edge: it reads settings and calls core."""

from __future__ import annotations

import typer

from app.cli import model, service
from app.cli.api_keys import apikey_app
from app.cli.audit import audit_app
from app.cli.certificates import certificate_app, keys_app
from app.cli.data import data_app
from benchmarks.cli import bench_app
from core.logs import configure_logging
from core.settings import LogSettings

app = typer.Typer(help="Unlearning-as-a-service for LLM recommenders (E2URec).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(apikey_app, name="apikey")
app.add_typer(audit_app, name="audit")
app.add_typer(certificate_app, name="certificate")
app.add_typer(keys_app, name="keys")
app.add_typer(model.model_app, name="model")
app.command()(model.train)
app.command()(model.evaluate)
app.command("recommend")(model.recommend_cmd)
app.command()(service.init)
app.command()(service.serve)


def main() -> None:
    settings = LogSettings()
    configure_logging(settings.log_format, settings.log_level)
    app()
