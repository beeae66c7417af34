"""``e2u apikey``: API keys, stored hashed."""

from __future__ import annotations

from typing import Annotated

import typer

from app.settings import ApiSettings
from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.services.api_keys import create_api_key, list_api_keys, parse_duration, revoke_api_key
from core.services.errors import ServiceError

apikey_app = typer.Typer(help="API keys (stored hashed).", no_args_is_help=True)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    scopes: Annotated[str, typer.Option(help="comma-separated: recommend, erase, admin")] = "recommend",
    expires_in: Annotated[
        str | None, typer.Option(help="valid for this long: 30m, 12h, 90d (default: until revoked)")
    ] = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    settings = ApiSettings()
    upgrade(settings.database_url_resolved)
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    with session_factory(settings.database_url_resolved)() as session:
        try:
            lifetime = None if expires_in is None else parse_duration(expires_in)
            key = create_api_key(session, name, wanted, expires_in=lifetime)
        except ServiceError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        session.commit()
    typer.echo(key)


@apikey_app.command("list")
def apikey_list() -> None:
    """Every key with its id, first characters, scopes and when it was created, last used and revoked (the
    keys themselves are not stored)."""
    settings = ApiSettings()
    upgrade(settings.database_url_resolved)
    with session_factory(settings.database_url_resolved)() as session:
        keys = list_api_keys(session)
    header = f"{'id':>4}  {'prefix':<12}  {'name':<20} {'scopes':<24} {'last used':<25}  {'expires':<25}"
    typer.echo(f"{header}  revoked")
    for key in keys:
        used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        expires = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "never"
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        scopes = ",".join(key.scopes)
        row = f"{key.id:>4}  {key.prefix:<12}  {key.name:<20} {scopes:<24} {used:<25}  {expires:<25}"
        typer.echo(f"{row}  {revoked}")


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[int, typer.Argument(help="the key's id (`e2u apikey list`)")]) -> None:
    """Revoke a key: running API processes refuse it within E2U_API_KEY_CACHE_SECONDS (2 s by default)."""
    settings = ApiSettings()
    upgrade(settings.database_url_resolved)
    with session_factory(settings.database_url_resolved)() as session:
        try:
            key = revoke_api_key(session, key_id, "cli:apikey-revoke")
        except ServiceError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        session.commit()
    typer.echo(f"revoked API key {key.id} ({key.name})")
