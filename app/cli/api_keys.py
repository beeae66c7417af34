"""``e2u apikey``: API keys, stored hashed."""

from __future__ import annotations

from typing import Annotated

import typer

from app.settings import ApiSettings
from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.services.api_keys import create_api_key
from core.services.errors import ServiceError

apikey_app = typer.Typer(help="API keys (stored hashed).", no_args_is_help=True)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    scopes: Annotated[str, typer.Option(help="comma-separated: recommend, erase, admin")] = "recommend",
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    settings = ApiSettings()
    upgrade(settings.database_url_resolved)
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    with session_factory(settings.database_url_resolved)() as session:
        try:
            key = create_api_key(session, name, wanted)
        except ServiceError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        session.commit()
    typer.echo(key)
