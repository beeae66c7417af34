"""The model area: ``e2u train``, ``e2u evaluate``, ``e2u recommend`` (files under E2U_HOME, no database),
and ``e2u model import-adapter`` (bring your own adapter: registers it as the first version)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.data import DataDirOpt, outside, refuse_on_initialised_registry
from core.db.engine import session_factory
from core.db.migrate import upgrade
from core.ml.data import DataError, load_prepared
from core.ml.evaluation import evaluate_all
from core.ml.model import LoraSpec, ModelConfig, ModelError, load_base
from core.ml.prompts import PromptError
from core.ml.recommender import popular_unseen, recommend, user_history
from core.ml.training import SCHEDULES, CheckpointError, TrainConfig
from core.ml.workflows import CURVE_FILE, load_scorer, train_first_adapter
from core.services.adapter_import import import_adapter
from core.services.errors import ServiceError
from core.settings import Settings

model_app = typer.Typer(
    help="Bring your own model: import an adapter trained elsewhere.", no_args_is_help=True
)

BaseOpt = Annotated[
    str | None, typer.Option(help="smollm2, tiny, or a local model folder (default: settings)")
]
AdapterOpt = Annotated[Path | None, typer.Option(help="adapter folder (default: <home>/adapters/v1)")]


def model_config(settings: Settings, base: str | None) -> ModelConfig:
    return ModelConfig(
        base=base or settings.base_model,
        cache_dir=str(settings.models_dir),
        prompt_file=settings.prompt_file_name,
    )


def train_v1(
    settings: Settings,
    base: str | None,
    config: TrainConfig,
    folder: Path | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    data_dir: Path | None = None,
) -> None:
    """Train adapter v1 on ``data_dir`` (default: the service's) into ``folder`` (default:
    <home>/adapters/v1) and say how it went; exit 2 when the
    checkpoint to resume from does not fit."""
    folder = folder or settings.adapters_dir / "v1"
    data = load_prepared(data_dir or settings.data_dir)
    try:
        trained = train_first_adapter(
            model_config(settings, base),
            data,
            config,
            folder,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )
    except CheckpointError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    result = trained.result
    resumed = f" (resumed at step {result.resumed_from_step})" if result.resumed_from_step else ""
    typer.echo(
        f"adapter saved to {folder} (sha256 {trained.sha256[:12]}); {result.steps} steps{resumed}, "
        f"{result.samples_seen} samples, stopped by {result.stopped_by}, best valid AUC "
        f"{result.best_valid_auc:.4f}, {result.seconds:.0f} s; learning curve in {folder / CURVE_FILE}"
    )


def train(
    base: BaseOpt = None,
    out: AdapterOpt = None,
    max_steps: int = 200,
    minutes: Annotated[
        float | None,
        typer.Option(help="time budget in minutes (training + validation, summed over resumed sessions)"),
    ] = None,
    max_samples: Annotated[
        int | None, typer.Option(help="train on a random subset of this many samples")
    ] = None,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    schedule: Annotated[
        str, typer.Option(help=f"learning-rate schedule: {', '.join(SCHEDULES)}")
    ] = "constant",
    warmup_steps: int = 0,
    eval_every: int = 50,
    patience: Annotated[int, typer.Option(help="validations without improvement before stopping")] = 3,
    valid_samples: int = 256,
    lora_rank: int = 8,
    lora_targets: Annotated[
        str, typer.Option(help="comma-separated module names (the default is q,v on a T5-style base)")
    ] = "q_proj,v_proj",
    seed: int = 0,
    checkpoint_every: Annotated[int, typer.Option(help="save the run's state every N steps")] = 50,
    resume: Annotated[
        bool, typer.Option(help="continue the interrupted run into --out from its checkpoint")
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Instruction-tune adapter v1 (LoRA on the frozen base) with early stopping on the validation split.

    The run's state is saved every --checkpoint-every steps beside the adapter (<out>.run/); after an
    interruption, the same command with --resume continues where it stopped (--minutes may grow).
    Refused once the registry is initialised, unless ``--data-dir`` and ``--out`` name separate folders."""
    settings = Settings()
    elsewhere = outside(data_dir, settings.home / "data") and outside(out, settings.adapters_dir)
    refuse_on_initialised_registry(settings, "train", elsewhere)
    targets = tuple(t.strip() for t in lora_targets.split(",") if t.strip())
    try:
        config = TrainConfig(
            lora=LoraSpec(r=lora_rank, alpha=2 * lora_rank, target_modules=targets),
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_steps=max_steps,
            max_samples=max_samples,
            eval_every=eval_every,
            patience=patience,
            valid_samples=valid_samples,
            seed=seed,
            schedule=schedule,
            warmup_steps=warmup_steps,
            max_minutes=minutes,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    train_v1(settings, base, config, out, checkpoint_every, resume, data_dir)


def evaluate(
    adapter: AdapterOpt = None,
    split: str = "test",
    limit: Annotated[int | None, typer.Option(help="evaluate a random subset of this many samples")] = None,
    base: BaseOpt = None,
    seed: int = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """AUC (with bootstrap 95% CI), LogLoss and accuracy of an adapter, next to two non-LLM references."""
    settings = Settings()
    data = load_prepared(settings.data_dir)
    target = data.split(split)
    if limit is not None and limit < len(target):
        target = target.sample(n=limit, random_state=seed).reset_index(drop=True)
    scorer = load_scorer(model_config(settings, base), data, adapter or settings.adapters_dir / "v1")
    results = evaluate_all(scorer, data.split("train"), target)
    typer.echo(f"{'model':<18} {'n':>6} {'AUC':>7} {'95% CI':>17} {'LogLoss':>8} {'Acc':>6}")
    for r in results:
        ll = f"{r.logloss:.4f}" if r.logloss is not None else "-"
        acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
        ci = f"[{r.auc_ci95[0]:.3f}, {r.auc_ci95[1]:.3f}]"
        typer.echo(f"{r.name:<18} {r.samples:>6} {r.auc:>7.4f} {ci:>17} {ll:>8} {acc:>6}")
    if json_out:
        json_out.write_text(json.dumps([r.as_dict() for r in results], indent=2))


def recommend_cmd(
    user: Annotated[str, typer.Option(help="user id")],
    k: Annotated[int, typer.Option("-k", help="how many items")] = 10,
    candidates: Annotated[int, typer.Option(help="how many unseen popular items to rank")] = 100,
    adapter: AdapterOpt = None,
    base: BaseOpt = None,
) -> None:
    """Top-k unseen items for a user, with P(like)."""
    settings = Settings()
    data = load_prepared(settings.data_dir)
    interactions = data.samples  # every sample is one rating (the first of each user has no sample)
    if user not in set(interactions["user_id"]):
        typer.echo(f"error: unknown user {user!r}", err=True)
        raise typer.Exit(2)
    scorer = load_scorer(model_config(settings, base), data, adapter or settings.adapters_dir / "v1")
    history = user_history(interactions, user, data.config.history_len)
    for rank, rec in enumerate(
        recommend(scorer, user, history, popular_unseen(interactions, user, candidates), k), 1
    ):
        typer.echo(f"{rank:>3}. {rec.score:.3f}  {rec.item_id:>6}  {rec.title}")


@model_app.command("import-adapter")
def import_adapter_cmd(
    path: Annotated[Path, typer.Argument(help="a PEFT LoRA folder (adapter_config.json + safetensors)")],
    base_sha256: Annotated[
        str | None, typer.Option(help="sha256 of the base weights it was trained on (checked if given)")
    ] = None,
    split: Annotated[str, typer.Option(help="the prepared split to evaluate it on")] = "test",
    data_dir: DataDirOpt = None,
) -> None:
    """Check a LoRA adapter trained elsewhere (plain PEFT) against this service's base model and prompt
    (E2U_BASE_MODEL, E2U_PROMPT_FILE), evaluate it, and register it as the first active version (marked
    imported), importing the prepared data (`e2u data prepare`) into the empty database beside it.
    Refused once any version exists.  Then `e2u serve` serves it."""
    settings = Settings()
    url = settings.database_url_resolved
    keyring = settings.keyring()  # development: the KEK is made before migration 0004 may need it
    upgrade(url, kek_file=settings.data_kek_path)
    try:
        data = load_prepared(data_dir or settings.data_dir)
        loaded = load_base(model_config(settings, None))
        with session_factory(url, keyring)() as session:
            result = import_adapter(
                session, loaded, path, data, settings.adapters_dir, settings.base_model, base_sha256, split
            )
            session.commit()
    except (DataError, ModelError, PromptError, ServiceError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    adapter = result.evaluation["results"][0]
    low, high = adapter["auc_ci95"]
    typer.echo(
        f"imported {path} as version {result.version_id} (active, root of the lineage; sha256 "
        f"{result.sha256[:12]}); LoRA rank {result.check.rank} on {', '.join(result.check.target_modules)}; "
        f"{split} AUC {adapter['auc']:.4f} [95% CI {low:.3f}, {high:.3f}] on {adapter['samples']} samples; "
        f"{result.imported_interactions} interactions imported"
    )
