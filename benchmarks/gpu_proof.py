"""The proof at scale, one command for one GPU: ``e2u bench gpu-proof`` (or, where only the ML libraries are
installed, as on the GPU image: ``python -m benchmarks.gpu_proof``).

1. adapter v1 (the parent) trained on the whole ML-100K training split (bf16 on CUDA: ``load_base``);
2. its test AUC on the whole test split against the item-mean and popularity references, each with a
   bootstrap 95% interval, and the paired difference v1 minus each reference with its own interval;
3. the unlearning benchmark from that parent for forget sets of 1, 10 and 50 users and 20% of the users,
   every method and Retrain, E2URec's variants (retain ratios, the log-probability teacher), over as many
   seeds as the time box allows (``benchmarks.unlearning.sweep``);
4. JSON + a PNG under the output folder.

``--smoke`` runs the same pipeline on the CPU in a few minutes: the tiny random-init model, a scaled-down
ML-100K, smaller forget sets.  It rehearses the code path, not the figures.

This module imports no service code (no settings, database or web framework): the GPU image has torch,
transformers, peft, pandas, scikit-learn, matplotlib and typer, and nothing can be installed there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from benchmarks import report
from benchmarks.report import Machine
from benchmarks.unlearning import sweep
from benchmarks.unlearning.config import PARENT, BenchConfig, BenchSizes, full_config
from benchmarks.unlearning.data import frames_for, scale_train
from benchmarks.unlearning.output import plot_per_user
from benchmarks.unlearning.run import parent_recipe, train_parent
from core.ml import data as data_mod
from core.ml import metrics
from core.ml.evaluation import REFERENCES, evaluate_all, evaluate_probs
from core.ml.model import TINY, LoraSpec, ModelConfig, load_base, new_adapter
from core.ml.training import TrainConfig
from core.ml.workflows import scorer_for

Log = Callable[[str], None]
RESULT = "gpu_proof.json"
FULL_SIZES = "1,10,50,20%"
SMOKE_SIZES = "1,3,20%"


@dataclass(frozen=True)
class ProofConfig:
    """One proof run: the benchmark config (model, parent recipe, scaling, methods), the forget-set sizes,
    seeds per size, E2URec's variants, the time box and the scorer's batch size."""

    bench: BenchConfig
    forget_sizes: tuple[sweep.ForgetSize, ...]
    seeds: int = 3
    retain_ratios: tuple[float, ...] = (1.0, 4.0)
    teacher_spaces: bool = True
    minutes: float = 8.0
    score_batch: int = 16
    smoke: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bench": self.bench.to_dict()}


def proof_config(
    model: ModelConfig,
    smoke: bool,
    sizes: str | None = None,
    seeds: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
) -> ProofConfig:
    """The GPU setting (the whole of ML-100K, one pass of the parent in batches of 64), or with ``smoke``
    the CPU rehearsal (60 users x 8 samples, 300 test samples, 4 passes in batches of 8)."""
    if smoke:
        parent = TrainConfig(
            lora=LoraSpec(), learning_rate=3e-3, batch_size=8, patience=2, valid_samples=64, seed=seed
        )
        # the tiny random model needs a larger step to move in a few updates; SmolLM2 keeps the defaults
        fast = {m: {"learning_rate": 1e-2} for m in ("e2urec", "neggrad", "label_flip", "npo")}
        fast = fast if model.base == TINY else {}
        bench = BenchConfig(
            model=model,
            parent=parent,
            parent_epochs=4.0,
            sizes=BenchSizes(users=60, train_per_user=8, test_samples=300),
            method_configs=fast,
            bootstrap_rounds=200,
            seed=seed,
            setting="gpu-proof-smoke",
        )
    else:
        bench = full_config(model, seed, setting="gpu-proof")
        bench = replace(
            bench, parent=replace(bench.parent, batch_size=64, learning_rate=2e-3, eval_every=400)
        )
    return ProofConfig(
        bench=bench,
        forget_sizes=tuple(
            sweep.ForgetSize.parse(s) for s in (sizes or (SMOKE_SIZES if smoke else FULL_SIZES)).split(",")
        ),
        seeds=seeds or (2 if smoke else 3),
        minutes=minutes or (15.0 if smoke else 8.0),
        score_batch=16 if smoke else 128,
        smoke=smoke,
    )


def paired_auc_difference(
    labels: np.ndarray, mine: np.ndarray, theirs: np.ndarray, rounds: int, seed: int
) -> dict[str, Any]:
    """AUC(mine) - AUC(theirs) on the same samples, with a paired bootstrap 95% interval."""
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(rounds):
        idx = rng.integers(0, len(labels), size=len(labels))
        if labels[idx].min() == labels[idx].max():
            continue
        differences.append(
            metrics.rank_auc(labels[idx], mine[idx]) - metrics.rank_auc(labels[idx], theirs[idx])
        )
    low, high = np.percentile(differences, [2.5, 97.5]) if differences else (math.nan, math.nan)
    point = metrics.rank_auc(labels, mine) - metrics.rank_auc(labels, theirs)
    return {"difference": point, "ci95": [float(low), float(high)], "samples": len(labels)}


def run_proof(
    data: data_mod.PreparedData,
    config: ProofConfig,
    log: Log | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The whole proof (module docstring); returns the JSON-ready result, also given to ``save`` after
    every forget set (marked ``complete: false``)."""
    say = log or (lambda _message: None)
    started = time.perf_counter()
    deadline = started + config.minutes * 60
    bench = config.bench
    train = scale_train(data.split("train"), bench.sizes, bench.seed)
    # v1 may take at most a third of the time box (TrainConfig.max_minutes stops it, best weights kept),
    # so that the unlearning sweep, the point of the proof, always gets the rest
    recipe = replace(parent_recipe(bench, len(train)), max_minutes=config.minutes / 3)
    loaded = load_base(bench.model)
    say(f"device {loaded.device}, dtype {next(loaded.model.parameters()).dtype}; base {bench.model.base}")
    scorer = scorer_for(loaded, data, batch_size=config.score_batch)
    new_adapter(loaded, recipe.lora, PARENT, seed=bench.seed)
    first = frames_for(train, data, config.forget_sizes[0].config(bench, bench.seed))
    say(f"training v1: {recipe.max_steps} steps of {recipe.batch_size} on {len(train)} samples")
    parent_run = train_parent(scorer, first, recipe, progress=False)
    say(
        f"v1: {parent_run.steps} steps in {parent_run.seconds:.1f} s, best valid AUC "
        f"{parent_run.details['best_valid_auc']:.4f}"
    )

    test = data.split("test")
    if bench.sizes.test_samples is not None and bench.sizes.test_samples < len(test):
        test = test.sample(n=bench.sizes.test_samples, random_state=bench.seed)
    clock = time.perf_counter()
    labels = test["label"].to_numpy()
    adapter_probs = scorer.score(test)
    evaluations = [evaluate_probs("adapter", labels, adapter_probs), *evaluate_all(None, train, test)]
    score_seconds = time.perf_counter() - clock
    versus = {
        name: paired_auc_difference(
            labels, adapter_probs, fn(train, test), bench.bootstrap_rounds, bench.seed
        )
        for name, fn in REFERENCES.items()
    }
    for evaluation in evaluations:
        low, high = evaluation.auc_ci95
        say(
            f"test AUC {evaluation.name}: {evaluation.auc:.4f} [{low:.3f}, {high:.3f}] "
            f"(n={evaluation.samples})"
        )
    for name, difference in versus.items():
        low, high = difference["ci95"]
        say(f"v1 minus {name}: {difference['difference']:+.4f} [{low:+.3f}, {high:+.3f}]")

    variants = sweep.variants_for(config.retain_ratios, config.teacher_spaces)
    head = {
        "benchmark": "gpu_proof",
        "machine": Machine.here(loaded.device).to_dict(),
        "cuda_device": torch.cuda.get_device_name(0) if loaded.device.type == "cuda" else None,
        "versions": versions(),
        "config": config.to_dict(),
        "train_samples": len(train),
        "parent": {
            "seconds": parent_run.seconds,
            "steps": parent_run.steps,
            "samples_per_second": parent_run.steps * recipe.batch_size / max(parent_run.seconds, 1e-9),
            "best_valid_auc": parent_run.details["best_valid_auc"],
            "curve": parent_run.details["curve"],
            "peak_memory_bytes": parent_run.peak_memory_bytes,
        },
        "test": {
            "samples": len(test),
            "evaluations": [e.as_dict() for e in evaluations],
            "v1_minus_reference_auc": versus,
            "score_seconds": score_seconds,
        },
        "time_box_seconds": config.minutes * 60,
    }

    def assemble(swept: sweep.SweepResult, complete: bool) -> dict[str, Any]:
        return {
            **head,
            "unlearning": swept.to_dict(bench.methods, bench.bootstrap_rounds),
            "seconds_total": time.perf_counter() - started,
            "complete": complete,  # False: saved after a unit, the run may have been cut short after it
        }

    swept = sweep.run_sweep(
        scorer,
        data,
        train,
        bench,
        config.forget_sizes,
        config.seeds,
        recipe,
        parent_run,
        variants,
        say,
        deadline,
        on_unit=None if save is None else lambda partial: save(assemble(partial, complete=False)),
    )
    return assemble(swept, complete=True)


def versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the run prints at the end: per size, E2URec's cost over Retrain's and the paired differences."""
    lines = [
        f"machine {result['cuda_device'] or result['machine']['device']}; versions {result['versions']}; "
        f"total {result['seconds_total']:.0f} s of a {result['time_box_seconds']:.0f} s box",
    ]
    for label, figures in result["unlearning"]["by_size"].items():
        cost = figures["seconds_vs_retrain"].get("e2urec") or {}
        lines.append(
            f"forget {label}: {figures['units']} unit(s), {figures['forget_users']} users; "
            f"E2URec/Retrain time {_estimate(cost)}"
        )
        for name, augment in figures["augment_reached"].items():
            lines.append(f"   {name}: augmented model over-fitted F in {augment}")
        for other, diff in figures["e2urec_minus_other_jsd_to_retrain"].items():
            lines.append(f"   JSD to Retrain, E2URec minus {other}: {_estimate(diff)}")
    for skipped in result["unlearning"]["skipped"]:
        lines.append(f"skipped: {skipped}")
    return lines


def _estimate(figure: dict[str, Any]) -> str:
    if not figure:
        return "-"
    low, high = figure["ci95"]
    return f"{figure['mean']:.4g} [{low:.3g}, {high:.3g}] (n={figure['n']})"


def plot(result: dict[str, Any], path: Path) -> None:
    """Four panels: v1 against the references; E2URec's and Retrain's seconds per size; E2URec's time over
    Retrain's per retain ratio; E2URec minus each other model in JSD to Retrain on F, per size."""
    fig, axes = report.figure(2, 2, (15, 10))
    evaluations = result["test"]["evaluations"]
    report.points_with_ci(
        axes[0, 0],
        [e["name"] for e in evaluations],
        [e["auc"] for e in evaluations],
        [tuple(e["auc_ci95"]) for e in evaluations],
        ["#c62828", "#757575", "#9e9e9e"][: len(evaluations)],
        f"test AUC, 95% CI (n={result['test']['samples']})",
    )
    by_size = {k: v for k, v in result["unlearning"]["by_size"].items() if k != "all"}
    labels = list(by_size)
    x = np.arange(len(labels))
    for offset, (key, colour, name) in enumerate(
        [("retrain_seconds", "#2e7d32", "Retrain"), ("e2urec_seconds", "#c62828", "E2URec (A included)")]
    ):
        values = [(by_size[s][key] or {}).get("mean", math.nan) for s in labels]
        axes[0, 1].bar(x + 0.4 * offset - 0.2, values, width=0.4, color=colour, label=name)
    axes[0, 1].set_xticks(x, [f"{s} users" for s in labels])
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_title("wall seconds per forget-set size (mean over seeds)", fontsize=10)
    axes[0, 1].legend(fontsize=8)
    ratios = sorted({m for s in labels for m in by_size[s]["seconds_vs_retrain"]})
    for method in ratios:
        values = [by_size[s]["seconds_vs_retrain"].get(method, {}).get("mean", math.nan) for s in labels]
        axes[1, 0].plot(x, values, marker="o", label=method)
    axes[1, 0].set_xticks(x, [f"{s} users" for s in labels])
    axes[1, 0].axhline(0.1, color="grey", ls="--", lw=1, label="aim: 10% of Retrain")
    axes[1, 0].set_yscale("log")
    axes[1, 0].set_title("E2URec variants' seconds over Retrain's (retain ratio, teacher)", fontsize=10)
    axes[1, 0].legend(fontsize=8)
    everything = result["unlearning"]["by_size"].get("all", {}).get("e2urec_minus_other_jsd_to_retrain", {})
    names = list(everything)
    report.points_with_ci(
        axes[1, 1],
        names,
        [everything[n]["mean"] for n in names],
        [tuple(everything[n]["ci95"]) for n in names],
        ["#1565c0"] * len(names),
        "JSD to Retrain on F per user: E2URec minus other (< 0: E2URec closer), all sizes",
    )
    axes[1, 1].lines[-1].remove()  # points_with_ci's chance line at 0.5 means nothing for a difference
    axes[1, 1].axhline(0, color="grey", lw=1)
    spread = [v for n in names for v in (everything[n]["mean"], *everything[n]["ci95"]) if math.isfinite(v)]
    if spread:
        margin = 0.1 * (max(spread) - min(spread) or 1e-3)
        axes[1, 1].set_ylim(min(*spread, 0.0) - margin, max(*spread, 0.0) + margin)
    fig.suptitle(f"GPU proof ({result['config']['bench']['setting']}): {result['cuda_device'] or 'CPU'}")
    fig.tight_layout()
    report.save_figure(fig, path, dpi=100)


# ---------------------------------------------------------------------------------------------- command


def command(
    out: Annotated[Path, typer.Option(help="folder for gpu_proof.json and .png")] = report.RESULTS
    / "gpu_proof",
    smoke: Annotated[bool, typer.Option(help="the CPU rehearsal: tiny model, scaled data, minutes")] = False,
    model: Annotated[
        str | None, typer.Option(help="smollm2 (default), tiny, or a local model folder")
    ] = None,
    movielens: Annotated[
        Path | None, typer.Option(help="ml-100k atomic files (default: the recbole wheel's)")
    ] = None,
    cache_dir: Annotated[Path, typer.Option(help="converted models")] = Path("var/models"),
    sizes: Annotated[str | None, typer.Option(help=f"forget-set sizes (default {FULL_SIZES})")] = None,
    seeds: Annotated[int | None, typer.Option(help="forget sets per size, time allowing")] = None,
    minutes: Annotated[float | None, typer.Option(help="time box (default 8; smoke 15)")] = None,
    seed: int = 0,
    users: Annotated[int | None, typer.Option(help="keep this many users (default: all; smoke 60)")] = None,
    train_per_user: Annotated[int | None, typer.Option(help="each user's most recent N samples")] = None,
    test_samples: Annotated[int | None, typer.Option(help="a random test subset of N")] = None,
    parent_epochs: Annotated[
        float | None, typer.Option(help="v1's passes over train (default 1; smoke 4)")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Train v1 on ML-100K, test it against the references, then unlearn 1, 10, 50 users and 20% of them
    with every method, E2URec against Retrain; JSON + PNG under OUT."""
    if threads is not None:
        torch.set_num_threads(threads)
    base = model or (TINY if smoke else "smollm2")
    config = proof_config(
        ModelConfig(base=base, cache_dir=str(cache_dir)), smoke, sizes, seeds, minutes, seed
    )
    if parent_epochs is not None:
        config = replace(config, bench=replace(config.bench, parent_epochs=parent_epochs))
    given = {"users": users, "train_per_user": train_per_user, "test_samples": test_samples}
    given = {k: v for k, v in given.items() if v is not None}
    if given:
        config = replace(config, bench=replace(config.bench, sizes=replace(config.bench.sizes, **given)))
    try:
        data = data_mod.prepare(data_mod.load_movielens(movielens), data_mod.SampleConfig())
    except data_mod.DataError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    json_path = out / RESULT
    result = run_proof(
        data, config, log=typer.echo, save=lambda partial: report.save_json(partial, json_path)
    )
    report.save_json(result, json_path)
    plot(result, json_path.with_suffix(".png"))
    if result["unlearning"]["units"]:  # the per-user distributions, every forget set together
        per_user_png = json_path.with_name(f"{json_path.stem}_per_user.png")
        plot_per_user(result["unlearning"]["by_size"]["all"], result["unlearning"]["units"], per_user_png)
    typer.echo("")
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"wrote {json_path} and {json_path.with_suffix('.png')}")


def main(argv: Sequence[str] | None = None) -> None:
    app = typer.Typer(add_completion=False)
    app.command()(command)
    app(args=list(argv) if argv is not None else None, prog_name="python -m benchmarks.gpu_proof")


if __name__ == "__main__":
    main()
