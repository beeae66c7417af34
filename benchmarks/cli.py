"""``e2u bench`` (also ``python -m benchmarks``): the benchmarks' command line.  An edge: it reads settings
and options, calls the benchmark, and writes its JSON and PNG under ``benchmarks/results/``."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from benchmarks import (
    canaries,
    gpu_proof,
    hotswap,
    intake,
    prefilter,
    ranking,
    recommender,
    report,
    scale,
    sealing,
    serving,
    synthetic,
    throughput,
    unlearning,
)
from core.ml import data as data_mod
from core.ml.model import LoraSpec, ModelConfig
from core.ml.training import TrainConfig
from core.settings import Settings

bench_app = typer.Typer(
    help="Benchmarks (figures, tables and plots under benchmarks/results/).", no_args_is_help=True
)

BaseOpt = Annotated[str | None, typer.Option(help="smollm2, tiny, or a local model folder")]
ThreadsOpt = Annotated[int | None, typer.Option(help="torch CPU threads (1 is faster on a busy machine)")]
OutOpt = Annotated[Path | None, typer.Option(help="JSON file (a PNG goes beside it)")]


def _setup(base: str | None, threads: int | None) -> tuple[Settings, ModelConfig]:
    if threads is not None:
        torch.set_num_threads(threads)
    settings = Settings()
    model = ModelConfig(
        base=base or settings.base_model,
        cache_dir=str(settings.models_dir),
        prompt_file=settings.prompt_file_name,
    )
    return settings, model


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(2)


def _save_and_show(record: dict[str, Any], path: Path, text: str) -> None:
    """Write a benchmark's record and print its text and where the record went."""
    report.save_json(record, path)
    typer.echo(text)
    typer.echo(f"wrote {path}")


def _load_data(settings: Settings) -> data_mod.PreparedData:
    try:
        return data_mod.load_prepared(settings.data_dir)
    except data_mod.DataError as error:
        raise _fail(error) from None


@bench_app.command("ranking")
def ranking_command(
    base: BaseOpt = None,
    candidates: int = 50,
    repeats: int = 3,
    user: str = "1",
    out: OutOpt = None,
    threads: ThreadsOpt = None,
    compare_prompt: Annotated[
        Path | None, typer.Option(help="a TOML prompt template also ranked prefix-shared, interleaved")
    ] = None,
    rank_batch_sizes: Annotated[
        str, typer.Option(help="comma-separated chunk sizes also timed prefix-shared, interleaved")
    ] = "",
) -> None:
    """Prefix-shared ranking against plain scoring: one user, N candidates, both paths interleaved."""
    settings, model = _setup(base, threads)
    sizes = [int(size) for size in rank_batch_sizes.split(",") if size]
    result = ranking.measure(model, _load_data(settings), user, candidates, repeats, compare_prompt, sizes)
    _save_and_show(result.to_dict(), out or report.RESULTS / "ranking.json", result.summary())


@bench_app.command("prefilter")
def prefilter_command(
    pool_sizes: Annotated[str, typer.Option(help="comma-separated pool sizes")] = "10,25,50,100,200,400",
    bootstrap: int = 2000,
    seed: int = 0,
    out: OutOpt = None,
) -> None:
    """Candidate pre-filtering: the share of test users' liked items each pool size and filter keeps."""
    settings = Settings()
    try:
        sizes = [int(size) for size in pool_sizes.split(",")]
        result = prefilter.measure(_load_data(settings), sizes, bootstrap, seed)
    except ValueError as error:
        raise _fail(error) from None
    _save_and_show(result.to_dict(), out or report.RESULTS / "prefilter.json", result.table())


@bench_app.command("recommender")
def recommender_command(
    base: BaseOpt = None,
    max_steps: int = 240,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    curve_every: Annotated[int, typer.Option(help="a learning-curve point every N steps")] = 60,
    test_samples: int = 600,
    valid_samples: int = 128,
    seed: int = 0,
    adapter_out: Annotated[Path | None, typer.Option(help="default: the adapter store's v1")] = None,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Adapter v1 against the non-LLM references, with a learning curve on a fixed test subset."""
    settings, model = _setup(base, threads)
    train = TrainConfig(
        lora=LoraSpec(),
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_steps=max_steps,
        eval_every=curve_every,
        patience=100,  # the curve needs every point; the best-on-valid weights are still restored at the end
        valid_samples=valid_samples,
        seed=seed,
    )
    command = (
        f"e2u bench recommender --max-steps {max_steps} --batch-size {batch_size} --learning-rate "
        f"{learning_rate} --curve-every {curve_every} --test-samples {test_samples} --valid-samples "
        f"{valid_samples} --seed {seed}"
    )
    data = _load_data(settings)
    adapter_dir = adapter_out or settings.adapters_dir / recommender.ADAPTER
    result = recommender.run_recommender(model, data, train, test_samples, adapter_dir, command, typer.echo)
    json_path = out or report.RESULTS / "recommender.json"
    report.save_json(result.to_dict(), json_path)
    recommender.plot(result, json_path.with_suffix(".png"))
    typer.echo(f"wrote {json_path} and .png; adapter {adapter_dir} sha256 {result.adapter_sha256[:12]}")


@bench_app.command("throughput")
def throughput_command(
    base: BaseOpt = None,
    samples: Annotated[
        int, typer.Option(help="training samples timed per variant and round (a multiple of 16)")
    ] = 16,
    repeats: Annotated[int, typer.Option(help="interleaved rounds (medians and spread over them)")] = 3,
    top_layers: Annotated[int, typer.Option(help="the top-layers variant puts LoRA in this many")] = 10,
    seed: int = 0,
    out: OutOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Training samples/second per lever (prompt length, batch size, LoRA rank/targets, top layers only),
    each against the baseline recipe measured in the same run."""
    settings, model = _setup(base, threads)
    command = (
        f"e2u bench throughput --samples {samples} --repeats {repeats} --top-layers {top_layers} "
        f"--seed {seed}" + (f" --threads {threads}" if threads is not None else "")
    )
    try:
        result = throughput.measure(
            model,
            _load_data(settings),
            throughput.default_variants(top_layers),
            samples,
            repeats,
            command,
            seed,
            typer.echo,
        )
    except ValueError as error:
        raise _fail(error) from None
    json_path = out or report.RESULTS / "throughput.json"
    report.save_json(result.to_dict(), json_path)
    typer.echo(result.table())
    typer.echo(f"wrote {json_path} ({result.seconds_total:.0f} s)")


@bench_app.command("unlearning")
def unlearning_command(
    quick: Annotated[
        bool, typer.Option(help="the 2-core CPU setting (scaled down; says how in the output)")
    ] = False,
    forget_users: Annotated[int | None, typer.Option(help="forget this many users")] = None,
    forget_fraction: Annotated[
        float | None, typer.Option(help="forget this fraction of the users (default 0.05)")
    ] = None,
    single_user: Annotated[bool, typer.Option(help="forget exactly one user (a single request)")] = False,
    seed: int = 0,
    out: OutOpt = None,
    base: BaseOpt = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated; must include retrain")] = None,
    users: Annotated[int | None, typer.Option(help="override: keep this many users")] = None,
    train_per_user: Annotated[
        int | None, typer.Option(help="override: most recent training samples per user")
    ] = None,
    test_samples: Annotated[int | None, typer.Option(help="override: test samples for utility")] = None,
    parent_epochs: Annotated[
        float | None, typer.Option(help="override: the parent's passes over train")
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Train a parent, run every unlearning method on the same forget set, and compare them."""
    if forget_users is not None and forget_fraction is not None:
        raise typer.BadParameter("give --forget-users or --forget-fraction, not both")
    if single_user and forget_users not in (None, 1):
        raise typer.BadParameter("--single-user means --forget-users 1")
    settings, model = _setup(base, threads)
    overrides: dict[str, Any] = {"forget_users": 1 if single_user else forget_users}
    if forget_fraction is not None:
        overrides["forget_fraction"] = forget_fraction
    if methods:
        overrides["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
    if parent_epochs is not None:
        overrides["parent_epochs"] = parent_epochs
    sizes = {"users": users, "train_per_user": train_per_user, "test_samples": test_samples}
    try:
        config = (unlearning.quick_config if quick else unlearning.full_config)(model, seed, **overrides)
        given = {k: v for k, v in sizes.items() if v is not None}
        if given:
            config = replace(config, sizes=replace(config.sizes, **given))
    except unlearning.BenchmarkError as error:
        raise _fail(error) from None
    data = _load_data(settings)
    json_path = out or report.RESULTS / f"unlearning_{config.setting}.json"
    result = unlearning.run_benchmark(data, config, log=typer.echo, progress=True)
    report.save_json(result.to_dict(), json_path)
    unlearning.plot(result, json_path.with_suffix(".png"))
    machine = result.machine
    typer.echo("")
    typer.echo(
        f"setting {config.setting}: sizes {asdict(result.sizes)}; parent recipe {config.parent_epochs} "
        f"passes; machine {machine.device}, {machine.cpu_count} CPUs, {machine.torch_threads} torch "
        f"threads; total {result.seconds_total:.0f} s"
    )
    typer.echo(unlearning.format_table(result))
    typer.echo(f"\nwrote {json_path} and {json_path.with_suffix('.png')}")


bench_app.command("gpu-proof")(gpu_proof.command)
bench_app.command("canaries")(canaries.command)
bench_app.command("verify-cost")(canaries.cost_command)
bench_app.command("sealing")(sealing.command)
bench_app.command("hotswap")(hotswap.command)
bench_app.command("serving")(serving.command)
bench_app.command("synth")(synthetic.command)
bench_app.command("intake")(intake.command)
bench_app.command("scale")(scale.command)
