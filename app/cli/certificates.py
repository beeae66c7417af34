"""``e2u certificate``: check an unlearning certificate's signature offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.settings import ApiSettings
from core.services.certificates import verify_certificate

certificate_app = typer.Typer(help="Unlearning certificates.", no_args_is_help=True)


@certificate_app.command("verify")
def certificate_verify(
    file: Annotated[Path, typer.Argument(help="a certificate (GET /v1/erasure-requests/{id}/certificate)")],
    key: Annotated[str | None, typer.Option(help="signing key (default: E2U_SIGNING_KEY)")] = None,
) -> None:
    """Check a certificate's signature; exit 0 if it is valid, 1 if not, 2 if the file cannot be read."""
    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        typer.echo(f"error: cannot read {file}: {error}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(document, dict):
        typer.echo(f"error: {file} is not a JSON object", err=True)
        raise typer.Exit(2)
    if not verify_certificate(document, key or ApiSettings().signing_key):
        typer.echo(f"INVALID: {file} was altered or signed with another key")
        raise typer.Exit(1)
    child = document.get("child_adapter") or {}
    destroyed = (document.get("timestamps") or {}).get("old_weights_destroyed_at")
    typer.echo(f"valid: request {document.get('request_id')}, served by adapter {child.get('id')}")
    typer.echo(f"old weights destroyed at {destroyed}")
