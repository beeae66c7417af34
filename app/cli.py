"""The ``e2u`` command line: data, training, evaluation, recommendations (more commands join as the
service grows).  An edge: it reads settings and calls core."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from app.launcher import initialise, start_worker, stop_process, wait_for_worker
from app.main import create_app
from app.runtime import Runtime
from app.settings import ApiSettings
from benchmarks.cli import bench_app
from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.ml import data as data_mod
from core.ml.data import SampleConfig
from core.ml.evaluation import evaluate_all
from core.ml.model import LoraSpec, ModelConfig
from core.ml.recommender import popular_unseen, recommend, user_history
from core.ml.training import TrainConfig
from core.ml.workflows import load_scorer, prepare_data, train_first_adapter
from core.services.api_keys import create_api_key
from core.services.certificates import verify_certificate
from core.services.errors import ServiceError
from core.services.imports import ImportConfig, import_data
from core.settings import Settings

app = typer.Typer(help="Unlearning-as-a-service for LLM recommenders (E2URec).", no_args_is_help=True)
data_app = typer.Typer(help="Prepare or import rating data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
apikey_app = typer.Typer(help="API keys (stored hashed).", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
certificate_app = typer.Typer(help="Unlearning certificates.", no_args_is_help=True)
app.add_typer(certificate_app, name="certificate")

BaseOpt = Annotated[
    str | None, typer.Option(help="smollm2, tiny, or a local model folder (default: settings)")
]


def _settings() -> Settings:
    return Settings()


def _model_config(settings: Settings, base: str | None) -> ModelConfig:
    return ModelConfig(base=base or settings.base_model, cache_dir=str(settings.models_dir))


def _load_data(settings: Settings) -> data_mod.PreparedData:
    return data_mod.load_prepared(settings.data_dir)


@data_app.command("prepare")
def data_prepare(
    ratings: Annotated[Path | None, typer.Option(help="ratings CSV: user,item,rating,timestamp")] = None,
    items: Annotated[Path | None, typer.Option(help="items CSV: item,title[,genres]")] = None,
    users: Annotated[
        Path | None, typer.Option(help="optional users CSV: user[,age,gender,occupation]")
    ] = None,
    history_len: Annotated[
        int | None, typer.Option(help="K, the number of earlier ratings in a prompt")
    ] = None,
) -> None:
    """Build samples and the chronological train/valid/test split (MovieLens-100K unless CSVs are given)."""
    settings = _settings()
    config = SampleConfig(history_len=history_len or settings.history_len)
    try:
        prepared, sha = prepare_data(settings.data_dir, config, ratings, items, users)
    except data_mod.DataError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    counts = prepared.samples["split"].value_counts().to_dict()
    typer.echo(
        f"prepared {len(prepared.samples)} samples {counts} in {settings.data_dir} (sha256 {sha[:12]})"
    )


@data_app.command("import")
def data_import(
    ratings: Annotated[Path, typer.Option(help="ratings CSV: user,item,rating,timestamp")],
    items: Annotated[Path, typer.Option(help="items CSV: item,title[,genres]")],
    users: Annotated[
        Path | None, typer.Option(help="optional users CSV: user[,age,gender,occupation]")
    ] = None,
) -> None:
    """Import your own items and ratings into the service's database (all or nothing; the running service
    sees them at once).  Ratings become new interactions; existing items get the file's titles/genres."""
    settings = _settings()
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


@app.command()
def train(
    base: BaseOpt = None,
    out: Annotated[Path | None, typer.Option(help="adapter folder (default: <home>/adapters/v1)")] = None,
    max_steps: int = 200,
    max_samples: Annotated[
        int | None, typer.Option(help="train on a random subset of this many samples")
    ] = None,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    eval_every: int = 50,
    valid_samples: int = 256,
    lora_rank: int = 8,
    seed: int = 0,
) -> None:
    """Instruction-tune adapter v1 (LoRA on the frozen base) with early stopping on the validation split."""
    settings = _settings()
    config = TrainConfig(
        lora=LoraSpec(r=lora_rank, alpha=2 * lora_rank),
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_steps=max_steps,
        max_samples=max_samples,
        eval_every=eval_every,
        valid_samples=valid_samples,
        seed=seed,
    )
    folder = out or settings.adapters_dir / "v1"
    trained = train_first_adapter(_model_config(settings, base), _load_data(settings), config, folder)
    typer.echo(
        f"adapter saved to {folder} (sha256 {trained.sha256[:12]}); {trained.result.steps} steps, "
        f"best valid AUC {trained.result.best_valid_auc:.4f}, {trained.result.seconds:.0f} s"
    )


@app.command()
def evaluate(
    adapter: Annotated[Path | None, typer.Option(help="adapter folder (default: <home>/adapters/v1)")] = None,
    split: str = "test",
    limit: Annotated[int | None, typer.Option(help="evaluate a random subset of this many samples")] = None,
    base: BaseOpt = None,
    seed: int = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """AUC (with bootstrap 95% CI), LogLoss and accuracy of an adapter, next to two non-LLM references."""
    settings = _settings()
    data = _load_data(settings)
    target = data.split(split)
    if limit is not None and limit < len(target):
        target = target.sample(n=limit, random_state=seed).reset_index(drop=True)
    scorer = load_scorer(_model_config(settings, base), data, adapter or settings.adapters_dir / "v1")
    results = evaluate_all(scorer, data.split("train"), target)
    typer.echo(f"{'model':<18} {'n':>6} {'AUC':>7} {'95% CI':>17} {'LogLoss':>8} {'Acc':>6}")
    for r in results:
        ll = f"{r.logloss:.4f}" if r.logloss is not None else "-"
        acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
        ci = f"[{r.auc_ci95[0]:.3f}, {r.auc_ci95[1]:.3f}]"
        typer.echo(f"{r.name:<18} {r.samples:>6} {r.auc:>7.4f} {ci:>17} {ll:>8} {acc:>6}")
    if json_out:
        json_out.write_text(json.dumps([r.as_dict() for r in results], indent=2))


@app.command("recommend")
def recommend_cmd(
    user: Annotated[str, typer.Option(help="user id")],
    k: Annotated[int, typer.Option("-k", help="how many items")] = 10,
    candidates: Annotated[int, typer.Option(help="how many unseen popular items to rank")] = 100,
    adapter: Annotated[Path | None, typer.Option(help="adapter folder (default: <home>/adapters/v1)")] = None,
    base: BaseOpt = None,
) -> None:
    """Top-k unseen items for a user, with P(like)."""
    settings = _settings()
    data = _load_data(settings)
    interactions = data.samples  # every sample is one rating (the first of each user has no sample)
    if user not in set(interactions["user_id"]):
        typer.echo(f"error: unknown user {user!r}", err=True)
        raise typer.Exit(2)
    scorer = load_scorer(_model_config(settings, base), data, adapter or settings.adapters_dir / "v1")
    history = user_history(interactions, user, data.config.history_len)
    for rank, rec in enumerate(
        recommend(scorer, user, history, popular_unseen(interactions, user, candidates), k), 1
    ):
        typer.echo(f"{rank:>3}. {rec.score:.3f}  {rec.item_id:>6}  {rec.title}")


def _quick_train(quick_steps: int) -> Callable[[], None]:
    return lambda: train(None, None, quick_steps, None, 8, 1e-3, max(10, quick_steps // 3), 128, 8, 0)


def _initialise(settings: ApiSettings, quick_steps: int) -> None:
    typer.echo("preparing: database migrations, data, model and adapter v1 (first start only)")
    report = initialise(settings, lambda: data_prepare(None, None, None, None), _quick_train(quick_steps))
    if report.imported_interactions:
        typer.echo(f"imported {report.imported_interactions} interactions")
    typer.echo(f"active adapter version: {report.active_version}")
    if report.dev_api_key:
        typer.echo(
            "\ndevelopment API key (all scopes; shown once, only its hash is stored):\n"
            f"    {report.dev_api_key}\n"
            "create more with `e2u apikey create --name NAME --scopes recommend,erase,admin`\n"
        )


@app.command()
def init(
    quick_steps: Annotated[int, typer.Option(help="training steps of the quick-start adapter v1")] = 60,
) -> None:
    """Migrate the database; on first start prepare data, model and adapter v1 and register them."""
    _initialise(ApiSettings(), quick_steps)


@app.command()
def serve(
    quick_steps: Annotated[int, typer.Option(help="training steps of the quick-start adapter v1")] = 60,
    host: Annotated[str | None, typer.Option(help="default: E2U_HOST (127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="default: E2U_PORT (8000)")] = None,
    worker: Annotated[bool, typer.Option(help="also run a Celery worker (+ beat), a second process")] = True,
    prepare: Annotated[bool, typer.Option(help="run `e2u init` first")] = True,
) -> None:
    """Run the service: prepare what is missing, then the API and a real Celery worker; Ctrl-C stops both."""
    settings = ApiSettings()
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
        uvicorn.run(create_app(settings, on_ready=ready), host=host, port=port, log_level="info")
    finally:
        if process is not None:
            typer.echo("stopping the worker ...")
            code = stop_process(process)
            typer.echo(f"worker stopped ({code})")


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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
