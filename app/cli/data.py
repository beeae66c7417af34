"""``e2u data``: prepare the training data (MovieLens-100K or CSVs) or import CSVs into the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.ml.data import DataError, FeedbackConfig, SampleConfig, find_data_files
from core.ml.workflows import prepare_data
from core.services.bootstrap import registry_is_initialised
from core.services.errors import ServiceError
from core.services.imports import ImportConfig, import_data
from core.settings import Settings

data_app = typer.Typer(help="Prepare or import rating data.", no_args_is_help=True)

RatingsOpt = Annotated[
    Path | None,
    typer.Option(help="ratings CSV: user,item,rating,timestamp (or MovieLens' userId,movieId,...)"),
]
ItemsOpt = Annotated[
    Path | None, typer.Option(help="items CSV: item,title[,genres] (or movieId,title,genres)")
]
UsersOpt = Annotated[Path | None, typer.Option(help="optional users CSV: user[,age,gender,occupation]")]
FromOpt = Annotated[
    Path | None,
    typer.Option(
        "--from",
        help="a MovieLens folder as downloaded (ml-latest-small, ml-25m: ratings.csv + movies.csv; ml-1m: "
        "ratings.dat + movies.dat [+ users.dat]) or one with ratings.csv + items.csv [+ users.csv]",
    ),
]
LIKE_RULE = "label: liked when rating > 3 (3.5 and up liked; 3 and below not)"


def data_files(
    source: Path | None, ratings: Path | None, items: Path | None, users: Path | None
) -> tuple[Path | None, Path | None, Path | None]:
    """The files to read: those found in the ``--from`` folder, or the ones named one by one (not both);
    exit 2 when the folder holds none."""
    if source is None:
        return ratings, items, users
    if ratings is not None or items is not None or users is not None:
        typer.echo("error: give --from FOLDER or --ratings/--items/--users, not both", err=True)
        raise typer.Exit(2)
    try:
        return find_data_files(source)
    except DataError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


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
    feedback: FeedbackConfig | None = None,
) -> None:
    """Prepare the samples into ``folder`` (default ``settings.data_dir``) and say what was made; exit 2 on
    unusable data."""
    folder = folder or settings.data_dir
    config = SampleConfig(history_len=history_len or settings.history_len)
    try:
        prepared, sha = prepare_data(folder, config, ratings, items, users, feedback=feedback)
    except DataError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    counts = prepared.samples["split"].value_counts().to_dict()
    typer.echo(f"prepared {len(prepared.samples)} samples {counts} in {folder} (sha256 {sha[:12]})")
    typer.echo(f"{LIKE_RULE}; {int(prepared.samples['label'].sum())} of {len(prepared.samples)} liked")


@data_app.command("prepare")
def data_prepare(
    source: FromOpt = None,
    ratings: RatingsOpt = None,
    items: ItemsOpt = None,
    users: UsersOpt = None,
    history_len: Annotated[
        int | None, typer.Option(help="K, the number of earlier ratings in a prompt")
    ] = None,
    data_dir: DataDirOpt = None,
    feedback: Annotated[
        str, typer.Option(help="explicit: ratings, liked above --like-threshold; implicit: each row an event")
    ] = "explicit",
    like_threshold: Annotated[float, typer.Option(help="explicit: a rating above it is a like")] = 3.0,
    negatives: Annotated[
        int, typer.Option(help="implicit: negatives per event, drawn from items the user never touched")
    ] = 4,
    negative_seed: Annotated[int, typer.Option(help="implicit: seed of the negative draw")] = 0,
) -> None:
    """Build samples and the chronological train/valid/test split (MovieLens-100K unless a folder or
    files are given).  Refused once the registry is initialised, unless ``--data-dir`` names a separate
    folder."""
    settings = Settings()
    ratings, items, users = data_files(source, ratings, items, users)
    refuse_on_initialised_registry(settings, "data prepare", outside(data_dir, settings.home / "data"))
    try:
        config = FeedbackConfig(feedback, like_threshold, negatives, negative_seed)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    prepare(settings, ratings, items, users, history_len, data_dir, config)


@data_app.command("import")
def data_import(
    source: FromOpt = None, ratings: RatingsOpt = None, items: ItemsOpt = None, users: UsersOpt = None
) -> None:
    """Import your own items and ratings into the service's database (all or nothing; the running service
    sees them at once).  Ratings become new interactions; existing items get the file's titles/genres.
    The files are streamed: any size fits in a bounded memory."""
    ratings, items, users = data_files(source, ratings, items, users)
    if ratings is None or items is None:
        typer.echo("error: give --from FOLDER, or --ratings and --items", err=True)
        raise typer.Exit(2)
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
    typer.echo(LIKE_RULE)
