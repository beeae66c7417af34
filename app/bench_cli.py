"""``e2u bench``: benchmarks.  An edge: it reads settings and options and calls ``core.ml.benchmark``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from core.ml import benchmark
from core.ml import data as data_mod
from core.ml.model import ModelConfig
from core.settings import Settings

bench_app = typer.Typer(
    help="Benchmarks (figures, tables and plots under benchmarks/results/).", no_args_is_help=True
)

RESULTS = Path("benchmarks/results")


@bench_app.command("unlearning")
def unlearning(
    quick: Annotated[
        bool, typer.Option(help="the 2-core CPU setting (scaled down; says how in the output)")
    ] = False,
    forget_users: Annotated[int | None, typer.Option(help="forget this many users")] = None,
    forget_fraction: Annotated[
        float | None, typer.Option(help="forget this fraction of the users (default 0.05)")
    ] = None,
    single_user: Annotated[bool, typer.Option(help="forget exactly one user (a single request)")] = False,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="JSON file (the PNG goes beside it)")] = None,
    base: Annotated[str | None, typer.Option(help="smollm2, tiny, or a local model folder")] = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated; must include retrain")] = None,
    users: Annotated[int | None, typer.Option(help="override: keep this many users")] = None,
    train_per_user: Annotated[
        int | None, typer.Option(help="override: most recent training samples per user")
    ] = None,
    test_samples: Annotated[int | None, typer.Option(help="override: test samples for utility")] = None,
    parent_epochs: Annotated[
        float | None, typer.Option(help="override: the parent's passes over train")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads (1 is faster on a busy machine)")
    ] = None,
) -> None:
    """Train a parent, run every unlearning method on the same forget set, and compare them."""
    if forget_users is not None and forget_fraction is not None:
        raise typer.BadParameter("give --forget-users or --forget-fraction, not both")
    if single_user and forget_users not in (None, 1):
        raise typer.BadParameter("--single-user means --forget-users 1")
    if threads is not None:
        torch.set_num_threads(threads)
    settings = Settings()
    model = ModelConfig(base=base or settings.base_model, cache_dir=str(settings.models_dir))
    overrides: dict[str, Any] = {"forget_users": 1 if single_user else forget_users}
    if forget_fraction is not None:
        overrides["forget_fraction"] = forget_fraction
    if methods:
        overrides["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
    if parent_epochs is not None:
        overrides["parent_epochs"] = parent_epochs
    try:
        config = (benchmark.quick_config if quick else benchmark.full_config)(model, seed, **overrides)
        sizes = {"users": users, "train_per_user": train_per_user, "test_samples": test_samples}
        given = {k: v for k, v in sizes.items() if v is not None}
        if given:
            config = replace(config, sizes=replace(config.sizes, **given))
        data = data_mod.load_prepared(settings.data_dir)
    except (benchmark.BenchmarkError, data_mod.DataError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    json_path = out or RESULTS / f"unlearning_{config.setting}.json"
    result = benchmark.run_benchmark(data, config, log=typer.echo, progress=True)
    benchmark.save_json(result, json_path)
    benchmark.plot(result, json_path.with_suffix(".png"))
    typer.echo("")
    typer.echo(
        f"setting {config.setting}: sizes {result['sizes']}; parent recipe {config.parent_epochs} passes; "
        f"machine {result['machine']['device']}, {result['machine']['cpu_count']} CPUs, "
        f"{result['machine']['torch_threads']} torch threads; total {result['seconds_total']:.0f} s"
    )
    typer.echo(benchmark.format_table(result))
    typer.echo(f"\nwrote {json_path} and {json_path.with_suffix('.png')}")
