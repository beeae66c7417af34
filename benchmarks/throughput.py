"""Training throughput: samples per second of one LoRA training step under each lever (tokens per sample,
batch size, LoRA rank and targets, which layers train), against the baseline recipe measured in the same
run.  ``e2u bench throughput``.

Every variant trains its own adapter on the same fixed training samples; the variants are interleaved
round by round (so that machine noise hits all alike), and each round's figure is divided by the same
round's baseline.  Ratios, with their spread over rounds, are what to compare across machines.

On a CPU the figure is samples per second of the process's CPU time (run it with one torch thread): on
a shared machine, other processes stretch the wall clock by a factor that changes within a minute, but
hardly the CPU time that the work itself takes.  Wall-clock figures are recorded beside them.  On CUDA
the figure is wall time (after a synchronise).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from benchmarks.report import Machine
from core.ml.data import PreparedData, decode_history, encode_history
from core.ml.model import LoadedModel, LoraSpec, ModelConfig, load_base
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.training import training_step

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


@dataclass(frozen=True)
class Variant:
    """One training recipe as far as speed goes.  ``history_len``: history items in the prompt (None: all
    that the prepared data keeps); ``top_layers``: LoRA only in the top N decoder layers (None: all);
    ``short_titles``: titles without their trailing "(year)"."""

    name: str
    history_len: int | None = None
    batch_size: int = 8
    lora: LoraSpec = field(default_factory=LoraSpec)
    top_layers: int | None = None
    short_titles: bool = False


def default_variants(top_layers: int) -> tuple[Variant, ...]:
    """The baseline (the service's recipe: the data's K (5 by default), batch 8, r=8 on q,v, every layer)
    and one lever each."""
    return (
        Variant("baseline"),
        Variant("history_3", history_len=3),
        Variant("short_titles", short_titles=True),
        Variant("batch_4", batch_size=4),
        Variant("batch_16", batch_size=16),
        Variant("rank_16", lora=LoraSpec(r=16, alpha=32)),
        Variant("all_linear_r8", lora=LoraSpec(target_modules=ALL_LINEAR)),
        Variant(f"top_{top_layers}_layers", top_layers=top_layers),
    )


@dataclass(frozen=True)
class VariantResult:
    """``samples_per_second[i]`` in round ``i`` (per CPU second on a CPU, per wall second on CUDA; see
    the module's docstring); ``ratio_to_baseline[i]`` the same divided by round ``i``'s baseline;
    ``wall_samples_per_second[i]`` per wall-clock second; ``samples_measured``: over all rounds."""

    variant: Variant
    tokens_per_sample: float
    trainable_parameters: int
    samples_per_second: list[float]
    ratio_to_baseline: list[float]
    wall_samples_per_second: list[float]
    samples_measured: int

    @property
    def median_samples_per_second(self) -> float:
        return float(np.median(self.samples_per_second))

    @property
    def ratio_median(self) -> float:
        return float(np.median(self.ratio_to_baseline))

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median_samples_per_second": self.median_samples_per_second,
            "ratio_median": self.ratio_median,
            "ratio_min": min(self.ratio_to_baseline),
            "ratio_max": max(self.ratio_to_baseline),
        }


@dataclass(frozen=True)
class ThroughputResult:
    command: str
    base: str
    machine: dict[str, Any]
    clock: str  # "process CPU time" or "wall time"
    repeats: int
    samples_per_measurement: int
    warmup_steps: int
    seconds_total: float
    variants: list[VariantResult]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "variants": [v.to_dict() for v in self.variants]}

    def table(self) -> str:
        lines = [
            f"samples per second of {self.clock}, median of {self.repeats} rounds of "
            f"{self.samples_per_measurement} samples; ratio to the baseline: median [min, max]",
            f"{'variant':<16} {'tok/sample':>10} {'params':>9} {'samples/s':>9} {'ratio':>6} {'spread':>13}",
        ]
        for v in self.variants:
            spread = f"[{min(v.ratio_to_baseline):.2f}, {max(v.ratio_to_baseline):.2f}]"
            lines.append(
                f"{v.variant.name:<16} {v.tokens_per_sample:>10.1f} {v.trainable_parameters:>9} "
                f"{v.median_samples_per_second:>9.3f} {v.ratio_median:>6.2f} {spread:>13}"
            )
        return "\n".join(lines)


def short_title(title: str) -> str:
    """``"Toy Story (1995)"`` -> ``"Toy Story"``; titles without a year stay as they are."""
    return _YEAR.sub("", title) or title


def _attach(loaded: LoadedModel, variant: Variant) -> list[torch.nn.Parameter]:
    """Add the variant's adapter (named after it) and return its parameters."""
    spec = variant.lora
    layers = int(loaded.model.config.num_hidden_layers)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        layers_to_transform=list(range(layers - variant.top_layers, layers)) if variant.top_layers else None,
        task_type="CAUSAL_LM",
        bias="none",
    )
    torch.manual_seed(0)
    if isinstance(loaded.model, PeftModel):
        loaded.model.add_adapter(variant.name, config)
    else:
        loaded.model = get_peft_model(loaded.model, config, adapter_name=variant.name)
    return [p for n, p in loaded.model.named_parameters() if f".{variant.name}." in n]


def _activate(loaded: LoadedModel, variant: Variant) -> None:
    loaded.model.set_adapter(variant.name)
    for name, parameter in loaded.model.named_parameters():  # only this variant's adapter trains
        parameter.requires_grad_(f".{variant.name}." in name)


def _samples_for(pool: pd.DataFrame, history_len: int | None) -> pd.DataFrame:
    if history_len is None:
        return pool
    shorter = pool.copy()
    shorter["history"] = [encode_history(decode_history(h)[-history_len:]) for h in pool["history"]]
    return shorter


def measure(
    model: ModelConfig,
    data: PreparedData,
    variants: tuple[Variant, ...],
    samples_per_measurement: int,
    repeats: int,
    command: str,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> ThroughputResult:
    """Time ``samples_per_measurement`` training samples (whole steps of each variant's batch size) per
    variant and round, ``repeats`` rounds, after one untimed warm-up step per variant.  The first variant
    is the baseline.  Every variant sees the same samples (a fixed random draw from train, ``seed``)."""
    say = log or (lambda _message: None)
    if variants[0].name != "baseline" or repeats < 1:
        raise ValueError("the first variant must be the baseline, and repeats >= 1")
    if any(samples_per_measurement % v.batch_size for v in variants):
        raise ValueError("samples_per_measurement must be a multiple of every variant's batch size")
    if any(v.history_len is not None and v.history_len > data.config.history_len for v in variants):
        raise ValueError(f"the prepared data keeps {data.config.history_len} history items; ask for fewer")
    started = time.perf_counter()
    train = data.split("train")
    pool = train.sample(n=min(samples_per_measurement, len(train)), random_state=seed).reset_index(drop=True)
    loaded = load_base(model)
    scorers, optimisers, samples, params = {}, {}, {}, {}
    for variant in variants:
        items = (
            data.items.assign(title=data.items["title"].map(short_title))
            if variant.short_titles
            else data.items
        )
        builder = PromptBuilder(loaded.tokenizer, Catalog.from_frames(items, data.users), loaded.prompt)
        scorers[variant.name] = Scorer(loaded, builder, batch_size=variant.batch_size)
        params[variant.name] = _attach(loaded, variant)
        optimisers[variant.name] = torch.optim.AdamW(params[variant.name], lr=1e-4, weight_decay=0.0)
        samples[variant.name] = _samples_for(pool, variant.history_len)

    on_cuda = loaded.device.type == "cuda"

    def run(variant: Variant, steps: int) -> tuple[float, float]:
        """(CPU seconds, wall seconds) of ``steps`` training steps."""
        _activate(loaded, variant)
        frame, scorer = samples[variant.name], scorers[variant.name]
        cpu, wall = time.process_time(), time.perf_counter()
        for step in range(steps):
            batch = frame.iloc[step * variant.batch_size : (step + 1) * variant.batch_size]
            training_step(scorer, optimisers[variant.name], batch)
        if on_cuda:
            torch.cuda.synchronize()
        return time.process_time() - cpu, time.perf_counter() - wall

    for variant in variants:
        run(variant, 1)  # warm-up: first-call allocations and the prompt-encoding cache
    per_round: dict[str, list[float]] = {v.name: [] for v in variants}
    wall_per_round: dict[str, list[float]] = {v.name: [] for v in variants}
    for round_index in range(repeats):
        for variant in variants:
            cpu_seconds, wall_seconds = run(variant, len(pool) // variant.batch_size)
            per_round[variant.name].append(len(pool) / (wall_seconds if on_cuda else cpu_seconds))
            wall_per_round[variant.name].append(len(pool) / wall_seconds)
        say(
            f"round {round_index + 1}/{repeats}: "
            + ", ".join(f"{k} {v[-1]:.3f}/s" for k, v in per_round.items())
        )
    baseline = per_round["baseline"]
    results = [
        VariantResult(
            variant=v,
            tokens_per_sample=float(np.mean([len(s) for s in scorers[v.name].encode_frame(samples[v.name])])),
            trainable_parameters=sum(p.numel() for p in params[v.name]),
            samples_per_second=per_round[v.name],
            ratio_to_baseline=[x / b for x, b in zip(per_round[v.name], baseline, strict=True)],
            wall_samples_per_second=wall_per_round[v.name],
            samples_measured=len(pool) * repeats,
        )
        for v in variants
    ]
    return ThroughputResult(
        command=command,
        base=model.base,
        machine=Machine.here(loaded.device).to_dict(),
        clock="wall time" if on_cuda else "process CPU time",
        repeats=repeats,
        samples_per_measurement=len(pool),
        warmup_steps=1,
        seconds_total=time.perf_counter() - started,
        variants=results,
    )
