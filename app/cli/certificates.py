"""``e2u certificate verify``: check an unlearning certificate against the published keys; ``e2u keys``:
the signing keys (rotate, print the JWKS) and the key-encryption key of the stored ratings (create,
rotate)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from app.settings import ApiSettings
from core.data_keys import DataKeyError, create_kek_file
from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.services.certificates import verify_certificate
from core.services.data_keys import rotate_kek
from core.signing import SignatureError

certificate_app = typer.Typer(help="Unlearning certificates.", no_args_is_help=True)
keys_app = typer.Typer(
    help="The keys that sign certificates; the key-encryption key of the stored ratings.",
    no_args_is_help=True,
)


def _read_json(source: str) -> Any:
    """A JSON document from a file or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as answer:
            return json.load(answer)
    return json.loads(Path(source).read_text())


@certificate_app.command("verify")
def certificate_verify(
    file: Annotated[Path, typer.Argument(help="a certificate (GET /v1/erasure-requests/{id}/certificate)")],
    jwks: Annotated[
        str | None,
        typer.Option(help="published keys: a file or URL (…/.well-known/jwks.json); default: this service's"),
    ] = None,
) -> None:
    """Check a certificate's signature and predicate type; exit 0 if valid, 1 if not, 2 if unreadable."""
    try:
        envelope = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        typer.echo(f"error: cannot read {file}: {error}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(envelope, dict):
        typer.echo(f"error: {file} is not a JSON object", err=True)
        raise typer.Exit(2)
    try:  # a settings error (production without a key file) is a ValueError too, and names the setting
        key_set = _read_json(jwks) if jwks else ApiSettings().signing_keys.jwks()
    except (OSError, ValueError, SignatureError) as error:
        typer.echo(f"error: cannot read the published keys {jwks or ''}: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        statement = verify_certificate(envelope, key_set)
    except SignatureError as error:
        typer.echo(f"INVALID: {file}: {error}")
        raise typer.Exit(1) from None
    predicate = statement["predicate"]
    child = predicate.get("child_adapter") or {}
    destroyed = (predicate.get("timestamps") or {}).get("old_weights_destroyed_at")
    typer.echo(f"valid (key {envelope['signatures'][0]['keyid']}): request {predicate.get('request_id')}")
    typer.echo(f"served by adapter {child.get('id')}; old weights destroyed at {destroyed}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key active; the old public key moves to the retired folder and stays published
    (certificates it signed keep verifying).  Workers read the key file for each job: no restart needed."""
    keys = ApiSettings().signing_keys
    old, new = keys.rotate()
    typer.echo(f"active key: {new}\nretired key: {old} ({keys.retired_dir / (old + '.jwk.json')})")


@keys_app.command("rotate-kek")
def keys_rotate_kek() -> None:
    """Rotate the key-encryption key of the stored ratings: a new KEK, every user's data key rewrapped,
    the old KEK deleted (old backups' wrapped keys stop opening).  Running processes follow the KEK file."""
    settings = ApiSettings()
    upgrade(settings.database_url_resolved, kek_file=settings.data_kek_path)
    sessions = session_factory(settings.database_url_resolved, settings.keyring())
    rotation = rotate_kek(sessions, actor="cli:keys-rotate-kek")
    typer.echo(
        f"active KEK: {rotation.new_kek_id}; {rotation.rewrapped} data keys rewrapped; "
        f"retired and deleted: {', '.join(rotation.retired) or 'none'}"
    )


@keys_app.command("create-kek")
def keys_create_kek(
    path: Annotated[Path, typer.Argument(help="where to write the new KEK (mode 0600)")],
) -> None:
    """Write a new key-encryption key for E2U_DATA_KEK_FILE (refused if the file exists)."""
    try:
        kid = create_kek_file(path)
    except DataKeyError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote KEK {kid} to {path}")


@keys_app.command("jwks")
def keys_jwks() -> None:
    """Print the published key set (what GET /.well-known/jwks.json answers)."""
    typer.echo(json.dumps(ApiSettings().signing_keys.jwks(), indent=2))
