"""``e2u data``: prepare the training data (MovieLens-100K or CSVs) or import CSVs into the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.ml.data import DataError, SampleConfig
from core.ml.workflows import prepare_data
from core.services.errors import ServiceError
from core.services.imports import ImportConfig, import_data
from core.settings import Settings

data_app = typer.Typer(help="Prepare or import rating data.", no_args_is_help=True)

RatingsOpt = Annotated[Path, typer.Option(help="ratings CSV: user,item,rating,timestamp")]
ItemsOpt = Annotated[Path, typer.Option(help="items CSV: item,title[,genres]")]
UsersOpt = Annotated[Path | None, typer.Option(help="optional users CSV: user[,age,gender,occupation]")]


def prepare(
    settings: Settings,
    ratings: Path | None = None,
    items: Path | None = None,
    users: Path | None = None,
    history_len: int | None = None,
) -> None:
    """Prepare the samples into ``settings.data_dir`` and say what was made; exit 2 on unusable data."""
    config = SampleConfig(history_len=history_len or settings.history_len)
    try:
        prepared, sha = prepare_data(settings.data_dir, config, ratings, items, users)
    except DataError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    counts = prepared.samples["split"].value_counts().to_dict()
    typer.echo(
        f"prepared {len(prepared.samples)} samples {counts} in {settings.data_dir} (sha256 {sha[:12]})"
    )


@data_app.command("prepare")
def data_prepare(
    ratings: Annotated[Path | None, typer.Option(help="ratings CSV: user,item,rating,timestamp")] = None,
    items: Annotated[Path | None, typer.Option(help="items CSV: item,title[,genres]")] = None,
    users: UsersOpt = None,
    history_len: Annotated[
        int | None, typer.Option(help="K, the number of earlier ratings in a prompt")
    ] = None,
) -> None:
    """Build samples and the chronological train/valid/test split (MovieLens-100K unless CSVs are given)."""
    prepare(Settings(), ratings, items, users, history_len)


@data_app.command("import")
def data_import(ratings: RatingsOpt, items: ItemsOpt, users: UsersOpt = None) -> None:
    """Import your own items and ratings into the service's database (all or nothing; the running service
    sees them at once).  Ratings become new interactions; existing items get the file's titles/genres."""
    settings = Settings()
    url = settings.database_url_resolved
    upgrade(url)
    config = ImportConfig(settings.certificate_salt, settings.history_len)
    with session_factory(url)() as session:
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
