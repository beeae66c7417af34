"""``e2u data``: prepare the training data (MovieLens-100K or CSVs) or import CSVs into the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.ml.data import DataError, SampleConfig
from core.ml.workflows import prepare_data
from core.services.bootstrap import registry_is_initialised
from core.services.errors import ServiceError
from core.services.imports import ImportConfig, import_data
from core.settings import Settings

data_app = typer.Typer(help="Prepare or import rating data.", no_args_is_help=True)

RatingsOpt = Annotated[Path, typer.Option(help="ratings CSV: user,item,rating,timestamp")]
ItemsOpt = Annotated[Path, typer.Option(help="items CSV: item,title[,genres]")]
UsersOpt = Annotated[Path | None, typer.Option(help="optional users CSV: user[,age,gender,occupation]")]


DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="a data folder other than the service's (required once the registry is initialised)"),
]


def refuse_on_initialised_registry(settings: Settings, command: str, elsewhere: bool) -> None:
    """Exit 2 when the service's registry is initialised and ``command`` would work on the service's own
    files (``elsewhere`` False): the source files still hold erased data, so rebuilding the prepared data
    or adapter v1 there could bring it back."""
    if elsewhere:
        return
    url = settings.database_url_resolved
    settings.keyring()  # development: the KEK is made before migration 0004 may need it
    upgrade(url, kek_file=settings.data_kek_path)
    with session_factory(url)() as session:
        initialised = registry_is_initialised(session)
    if initialised:
        typer.echo(
            f"error: refused: the registry is initialised (adapter versions exist); `e2u {command}` would "
            "rebuild data that erasures removed from the service's files (the source files still hold it). "
            "Point it at a separate folder (--data-dir, and --out for `e2u train`), outside the service's "
            f"{settings.home}/data and {settings.adapters_dir}.",
            err=True,
        )
        raise typer.Exit(2)


def outside(path: Path | None, service_dir: Path) -> bool:
    """``path`` is given and lies outside ``service_dir`` (the service's own folder)."""
    if path is None:
        return False
    target, own = path.resolve(), service_dir.resolve()
    return target != own and own not in target.parents and target not in own.parents


def prepare(
    settings: Settings,
    ratings: Path | None = None,
    items: Path | None = None,
    users: Path | None = None,
    history_len: int | None = None,
    folder: Path | None = None,
) -> None:
    """Prepare the samples into ``folder`` (default ``settings.data_dir``) and say what was made; exit 2 on
    unusable data."""
    folder = folder or settings.data_dir
    config = SampleConfig(history_len=history_len or settings.history_len)
    try:
        prepared, sha = prepare_data(folder, config, ratings, items, users)
    except DataError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    counts = prepared.samples["split"].value_counts().to_dict()
    typer.echo(f"prepared {len(prepared.samples)} samples {counts} in {folder} (sha256 {sha[:12]})")


@data_app.command("prepare")
def data_prepare(
    ratings: Annotated[Path | None, typer.Option(help="ratings CSV: user,item,rating,timestamp")] = None,
    items: Annotated[Path | None, typer.Option(help="items CSV: item,title[,genres]")] = None,
    users: UsersOpt = None,
    history_len: Annotated[
        int | None, typer.Option(help="K, the number of earlier ratings in a prompt")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Build samples and the chronological train/valid/test split (MovieLens-100K unless CSVs are given).
    Refused once the registry is initialised, unless ``--data-dir`` names a separate folder."""
    settings = Settings()
    refuse_on_initialised_registry(settings, "data prepare", outside(data_dir, settings.home / "data"))
    prepare(settings, ratings, items, users, history_len, data_dir)


@data_app.command("import")
def data_import(ratings: RatingsOpt, items: ItemsOpt, users: UsersOpt = None) -> None:
    """Import your own items and ratings into the service's database (all or nothing; the running service
    sees them at once).  Ratings become new interactions; existing items get the file's titles/genres."""
    settings = Settings()
    url = settings.database_url_resolved
    keyring = settings.keyring()
    upgrade(url, kek_file=settings.data_kek_path)
    config = ImportConfig(settings.certificate_salt, settings.history_len)
    with session_factory(url, keyring)() as session:
        try:
            report = import_data(session, ratings, items, users, config, actor="cli:data-import")
        except ServiceError as error:
            session.rollback()
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        session.commit()
    typer.echo(
        f"imported {report.ratings_added} ratings of {report.users_rated} users; items: "
        f"{report.items_added} added, {report.items_updated} updated; profiles: "
        f"{report.profiles_added} added, {report.profiles_updated} updated"
    )
