"""``e2u audit``: the audit log's export."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from app.settings import ApiSettings
from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.services import audit as audit_service
from core.services.errors import ServiceError

audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}") from None


@audit_app.command("export")
def audit_export(
    since: Annotated[str | None, typer.Option(help="entries at or after (ISO 8601 with offset)")] = None,
    until: Annotated[str | None, typer.Option(help="entries before (ISO 8601 with offset)")] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="action or prefix (erasure, api_key); repeatable")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="write here (default: standard output)")] = None,
) -> None:
    """Write the audit log as JSON lines, oldest first."""
    settings = ApiSettings()
    upgrade(settings.database_url_resolved)
    try:
        wanted = audit_service.AuditFilter(_moment(since), _moment(until), audit_service.kinds_of(kind or []))
    except ServiceError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    out = output.open("w") if output else sys.stdout
    try:
        with session_factory(settings.database_url_resolved)() as session:
            for record in audit_service.export_audit(session, wanted):
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
    finally:
        if output:
            out.close()
