"""Positive controls for the verifier (``e2u bench canaries``): canary users planted in training.

Issue 9 asks for proof that the verifier detects memorisation when it exists, and for a lower bound on
what an unlearning method leaves behind.  The design follows one-run privacy auditing (each canary
included with probability 1/2, so that the canaries left out are the negative controls):

1. a population whose users like the even items and dislike the odd ones (each rating the other way round
   with probability ``population_noise``, so that held-out users disagree with the population too, as
   real users do and as the matched reference needs), and ``canaries`` canary users,
   each with a taste of its own (a random half of the items liked, the rest disliked: so it disagrees with
   the population on about half of them, and no canary's taste can be learned from another's) and a
   profile of its own; all their ratings come first in time, so that they all land in the train split.
   (A taste shared by all canaries, e.g. the population's reverse, was tried first: the planted canaries
   then teach the parent the group's taste, and the canaries never planted rise with them);
2. each canary is planted (its samples in the parent's training data, repeated ``1 + copies`` times) with
   probability 1/2, drawn with the seed; the others never reach any training data;
3. the parent (v1) is trained once;
4. for every method and every canary, planted or not: the method unlearns the canary's samples from the
   parent into a child, and ``core.ml.verification.verify_candidate`` judges it with the configured
   ``EvidenceConfig`` and ``VerificationSizes`` (the service's path; the parent's figures are cached
   across canaries as the service caches them across jobs), twice on the same child: with the reference
   matched to the canary by the population it disagrees with (``reference`` "matched", the service's
   verifier now) and with the unmatched population reference and main's utility gate before issue 9's
   second pass ("population": failed whenever the AUC difference's interval reached below the margin),
   so that before and after are read off the same canaries, parent and children.

The summary per method and reference (``"e2urec/matched"``), planted against not planted, with
Clopper-Pearson intervals on every rate:

- the parent's memorisation test (p <= alpha): its detection rate on planted canaries is the verifier's
  power, on the others its false-positive rate;
- the verdict classes after unlearning;
- the child's memorisation test: its detection rate on planted canaries is a lower bound on the
  method's leakage (a canary detected in the child was not forgotten), the rate on canaries never
  planted its false-positive rate; ``advantage_low`` (the planted rate's lower bound minus the other's
  upper bound, at least 0) is what the canaries prove leaked beyond chance;
- ``membership_auc``: how well each model's memorisation statistic separates planted canaries from the
  others (no calibration against the population needed): the child's interval above 0.5 is leakage the
  method left, whatever the memorisation test at ``alpha`` says.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import typer
from scipy import stats

from benchmarks.report import RESULTS, Machine, save_json
from core.ml import metrics
from core.ml.data import Dataset, PreparedData, SampleConfig, holdout_users, load_prepared, prepare
from core.ml.evidence import EvidenceConfig
from core.ml.model import LoraSpec, ModelConfig, load_base, new_adapter, save_adapter, unload_adapter
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.training import TrainConfig, train_adapter
from core.ml.unlearning import Progress, UnlearningInputs, run_unlearning
from core.ml.unlearning.adapters import activate
from core.ml.unlearning_job import JobData, UnlearningPlan, unlearn_and_verify
from core.ml.verification import ScoreCache, VerificationSizes, verify_candidate, warm_version_scores
from core.ml.workflows import scorer_for
from core.services.batching import job_settings_from
from core.settings import Settings

PARENT = "canary_parent"
PARENT_RECIPE = TrainConfig(
    lora=LoraSpec(r=8, alpha=16),
    learning_rate=1e-2,
    batch_size=16,
    max_steps=300,
    eval_every=300,
    valid_samples=64,
)
Log = Callable[[str], None]


@dataclass(frozen=True)
class CanaryConfig:
    """One canary run: the data, the parent's recipe, the methods and the verifier's settings.

    ``population`` users rate ``per_user`` of ``items`` items each; ``canaries`` canaries rate every item;
    ``holdout_fraction`` of all users (never a canary) calibrate the memorisation test; a planted canary's
    samples appear ``1 + copies`` times in the parent's training data; each population rating goes against
    the population's taste with probability ``population_noise``.  ``methods``: registered unlearning
    methods, each with ``method_configs.get(name, {})`` plus the seed.
    """

    model: ModelConfig
    canaries: int = 16
    population: int = 120
    items: int = 20
    per_user: int = 10
    holdout_fraction: float = 0.3
    copies: int = 4
    population_noise: float = 0.2
    history_len: int = 3
    recipe: TrainConfig = PARENT_RECIPE
    methods: tuple[str, ...] = ("e2urec",)
    method_configs: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"e2urec": {"learning_rate": 5e-3}}
    )
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    sizes: VerificationSizes = field(default_factory=VerificationSizes)
    seed: int = 0
    score_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.canaries < 2 or self.population < 4 or self.copies < 0:
            raise ValueError("need >= 2 canaries, >= 4 population users and copies >= 0")
        if not 0 <= self.population_noise < 0.5:
            raise ValueError(f"population_noise must be in [0, 0.5), got {self.population_noise}")
        if not self.methods:
            raise ValueError("name at least one unlearning method")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["model"] = {"base": self.model.base, "device": self.model.device}
        return values


# ---------------------------------------------------------------------------------------------- data


def canary_ids(count: int, population: int, fraction: float) -> list[str]:
    """``count`` canary ids that ``holdout_users`` never holds out: the candidates whose holdout hash
    ranks last (the held-out users are those that rank first)."""
    candidates = [f"canary{k:03d}" for k in range(4 * count)]
    ranked = sorted(candidates, key=lambda u: hashlib.sha256(f"holdout:{u}".encode()).hexdigest())
    chosen = sorted(ranked[-count:])
    held = holdout_users([f"u{u:03d}" for u in range(population)] + chosen, fraction)
    if held & set(chosen):
        raise ValueError("a canary would be held out: raise population or lower holdout_fraction")
    return chosen


def canary_dataset(config: CanaryConfig) -> tuple[Dataset, list[str]]:
    """The population (even items liked, odd ones disliked, ratings 4-5 and 1-2, each the other way round
    with probability ``population_noise``) and the canaries (each its own random half of the items liked,
    every item once, first in time; its own age and occupation)."""
    rng = np.random.default_rng(config.seed)
    canaries = canary_ids(config.canaries, config.population, config.holdout_fraction)
    rows, t = [], 1_000_000
    for canary in canaries:
        liked = set(rng.permutation(config.items)[: config.items // 2].tolist())  # its own taste
        for i in rng.permutation(config.items):
            t += 1
            rows.append((canary, f"i{i}", 5.0 if i in liked else 1.0, t))
    population = [f"u{u:03d}" for u in range(config.population)]
    for user in population:
        for i in rng.choice(config.items, size=config.per_user, replace=False):
            t += int(rng.integers(1, 100))
            liked = (i % 2 == 0) != (rng.random() < config.population_noise)
            rows.append((user, f"i{i}", float(rng.choice([4, 5] if liked else [1, 2])), t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(config.items)],
            "title": [f"Movie {i}" for i in range(config.items)],
            "genres": "",
        }
    )
    jobs = ["pilot", "farmer", "lawyer", "artist", "doctor", "student", "engineer", "retired"]
    profiles = pd.DataFrame(
        {
            "user_id": population + canaries,
            "age": ["30"] * len(population) + [str(50 + k) for k in range(len(canaries))],
            "gender": ["F"] * len(population) + ["M"] * len(canaries),
            "occupation": ["writer"] * len(population) + [jobs[k % len(jobs)] for k in range(len(canaries))],
        }
    )
    return Dataset(interactions, catalog, profiles), canaries


@dataclass(frozen=True)
class CanaryData:
    """The prepared samples, each canary's samples and whether it was planted, and the parent's training
    data (population train samples plus the planted canaries' samples, repeated)."""

    data: PreparedData
    canaries: dict[str, pd.DataFrame]
    planted: dict[str, bool]
    train: pd.DataFrame

    def retain_without(self, canary: str) -> pd.DataFrame:
        """What the parent trained on, once each, less ``canary``."""
        train = self.data.split("train")
        kept = ~train["user_id"].isin([c for c, p in self.planted.items() if not p or c == canary])
        return train[kept].reset_index(drop=True)


def canary_data(config: CanaryConfig) -> CanaryData:
    dataset, canaries = canary_dataset(config)
    sample_config = SampleConfig(
        history_len=config.history_len,
        holdout_user_fraction=config.holdout_fraction,
        valid_fraction=0.15,
        test_fraction=0.15,
    )
    data = prepare(dataset, sample_config)
    train = data.split("train")
    by_canary = {c: train[train["user_id"] == c].reset_index(drop=True) for c in canaries}
    if any(len(f) != config.items for f in by_canary.values()):
        raise ValueError("every canary rating must fall in the train split")
    draws = np.random.default_rng([config.seed, 1]).random(len(canaries)) < 0.5
    planted = {c: bool(d) for c, d in zip(canaries, draws, strict=True)}
    population = train[~train["user_id"].isin(canaries)]
    chosen = [by_canary[c] for c in canaries if planted[c]]
    parts = [population] + chosen * (1 + config.copies)
    return CanaryData(data, by_canary, planted, pd.concat(parts, ignore_index=True))


# ---------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Rate:
    """``hits`` of ``n`` with its two-sided Clopper-Pearson interval at ``1 - alpha``."""

    hits: int
    n: int
    rate: float
    low: float
    high: float

    @classmethod
    def of(cls, hits: int, n: int, alpha: float) -> Rate:
        if n == 0:
            return cls(0, 0, float("nan"), 0.0, 1.0)
        low = float(stats.beta.ppf(alpha / 2, hits, n - hits + 1)) if hits > 0 else 0.0
        high = float(stats.beta.ppf(1 - alpha / 2, hits + 1, n - hits)) if hits < n else 1.0
        return cls(hits, n, hits / n, low, high)


@dataclass(frozen=True)
class CanaryRecord:
    """One canary erased by one method: the verifier's figures and timings."""

    canary: str
    method: str
    planted: bool
    forget_samples: int
    parent_p: float
    parent_excess: float | None
    child_p: float | None
    child_p_lower: float | None
    child_excess: float | None
    verdict: str
    reasons: list[str]
    unlearn_seconds: float
    verify_seconds: float
    reference: str = "matched"  # the verifier's memorisation reference (see the module docstring)


def _group(records: Sequence[CanaryRecord], alpha: float) -> dict[str, Any]:
    """Figures of one group of canaries (all planted, or none)."""
    n = len(records)
    parent_hits = sum(r.parent_p <= alpha for r in records)
    child_hits = sum(r.child_p is not None and r.child_p <= alpha for r in records)
    return {
        "canaries": n,
        "parent_memorised": asdict(Rate.of(parent_hits, n, alpha)),
        "child_memorised": asdict(Rate.of(child_hits, n, alpha)),
        "verdicts": dict(sorted(Counter(r.verdict for r in records).items())),
        "parent_p_values": [r.parent_p for r in records],
        "child_p_values": [r.child_p for r in records],
    }


def membership_auc(
    records: Sequence[CanaryRecord], child: bool, alpha: float, seed: int = 0
) -> dict[str, float]:
    """How well a model's memorisation statistic (the excess over held-out users) tells planted canaries
    from the others: the AUC (0.5: not at all), with a percentile bootstrap interval over canaries (2000
    resamples).  Unlike the p-values it needs no calibration against the population, so it sees signal that
    a canary's atypical taste hides from the memorisation test."""
    scored = [(r.planted, r.child_excess if child else r.parent_excess) for r in records]
    pairs = [(p, x) for p, x in scored if x is not None]
    labels = np.array([p for p, _ in pairs], dtype=bool)
    values = np.array([x for _, x in pairs], dtype=np.float64)
    if labels.all() or not labels.any():
        return {"value": float("nan"), "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(2000):
        idx = rng.integers(0, len(values), len(values))
        if labels[idx].any() and not labels[idx].all():
            draws.append(metrics.rank_auc(labels[idx], values[idx]))
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return {"value": metrics.rank_auc(labels, values), "low": float(low), "high": float(high)}


def summarise(records: Sequence[CanaryRecord], alpha: float) -> dict[str, Any]:
    """Per method and reference (key ``"method/reference"``): planted against not planted (see the module
    docstring), with the verifier's power, false-positive rate and the leakage lower bound read off them."""
    out: dict[str, Any] = {}
    for method, reference in sorted({(r.method, r.reference) for r in records}):
        mine = [r for r in records if (r.method, r.reference) == (method, reference)]
        planted = _group([r for r in mine if r.planted], alpha)
        absent = _group([r for r in mine if not r.planted], alpha)
        leak, chance = planted["child_memorised"], absent["child_memorised"]
        out[f"{method}/{reference}"] = {
            "planted": planted,
            "not_planted": absent,
            "power": planted["parent_memorised"],
            "false_positive_rate": absent["parent_memorised"],
            "leakage_lower_bound": leak["low"],
            "advantage_low": max(0.0, leak["low"] - chance["high"]),
            "membership_auc": {
                "parent": membership_auc(mine, False, alpha),
                "child": membership_auc(mine, True, alpha),
            },
            "seconds": {
                "unlearn_mean": float(np.mean([r.unlearn_seconds for r in mine])),
                "verify_mean": float(np.mean([r.verify_seconds for r in mine])),
            },
        }
    return out


@dataclass
class CanaryResult:
    config: CanaryConfig
    machine: Machine
    planted: dict[str, bool]
    parent: dict[str, Any]
    records: list[CanaryRecord]
    summary: dict[str, Any]
    seconds_total: float
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": "canaries",
            "command": self.command,
            "machine": self.machine.to_dict(),
            "config": self.config.to_dict(),
            "planted": self.planted,
            "parent": self.parent,
            "summary": self.summary,
            "records": [asdict(r) for r in self.records],
            "seconds_total": self.seconds_total,
        }

    def lines(self) -> list[str]:
        """A few lines per method for the terminal."""
        out = []
        for method, s in self.summary.items():
            p, n = s["planted"], s["not_planted"]
            out.append(
                f"{method}: parent memorised {_rate(s['power'])} planted, {_rate(s['false_positive_rate'])} "
                f"not planted; child memorised {_rate(p['child_memorised'])} planted, "
                f"{_rate(n['child_memorised'])} not planted; leakage >= {s['leakage_lower_bound']:.3f}"
            )
            auc = s["membership_auc"]
            out.append(
                f"  planted vs not by the excess: parent AUC {_interval(auc['parent'])}, child AUC "
                f"{_interval(auc['child'])}"
            )
            out.append(f"  verdicts planted {p['verdicts']}; not planted {n['verdicts']}")
        return out


def _interval(figure: dict[str, float]) -> str:
    return f"{figure['value']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}]"


def _rate(rate: dict[str, Any]) -> str:
    return f"{rate['hits']}/{rate['n']} [{rate['low']:.2f}, {rate['high']:.2f}]"


# ---------------------------------------------------------------------------------------------- the run


def run_canaries(config: CanaryConfig, log: Log | None = None, command: str = "") -> CanaryResult:
    """Plant, train the parent, erase every canary with every method through ``verify_candidate``."""
    say = log or (lambda _message: None)
    started = time.perf_counter()
    frames = canary_data(config)
    data = frames.data
    holdout, valid = data.split("holdout"), data.split("valid")
    planted = sum(frames.planted.values())
    say(
        f"canaries: {planted} of {len(frames.planted)} planted (x{1 + config.copies}); train "
        f"{len(frames.train)} samples, holdout users {holdout['user_id'].nunique()}, valid {len(valid)}"
    )
    loaded = load_base(config.model)
    scorer: Scorer = scorer_for(loaded, data, config.score_batch_size)
    new_adapter(loaded, config.recipe.lora, PARENT, seed=config.seed)
    trained = train_adapter(scorer, PARENT, frames.train, valid, config.recipe, progress=False)
    activate(loaded.model, PARENT, trainable=False)
    parent = {"steps": trained.steps, "best_valid_auc": trained.best_valid_auc}
    say(f"parent: {trained.steps} steps, best valid AUC {trained.best_valid_auc:.4f}")
    parent_cache = ScoreCache(None)  # the parent's held-out and utility scores, once for all canaries
    records = []
    for method in config.methods:
        settings = {"seed": config.seed, **config.method_configs.get(method, {})}
        for canary, forget in frames.canaries.items():
            child = f"child_{method}"
            inputs = UnlearningInputs(scorer, PARENT, forget, frames.retain_without(canary), valid)
            unlearn_started = time.perf_counter()
            run_unlearning(method, inputs, settings, child, Progress())
            unlearn_seconds = time.perf_counter() - unlearn_started
            child_cache, judged = ScoreCache(None), []  # the child's utility scores serve both verdicts
            for reference, population in (("population", None), ("matched", frames.retain_without(canary))):
                result = verify_candidate(
                    scorer,
                    PARENT,
                    child,
                    forget,
                    holdout,
                    valid,
                    config.evidence,
                    config.sizes,
                    parent_cache,
                    child_cache,
                    population=population,
                )
                record = _record(canary, method, frames.planted[canary], len(forget), result.figures)
                if reference == "population":
                    record = _with_mains_utility_gate(record, result.figures, config.evidence)
                judged.append(replace(record, reference=reference))
            activate(loaded.model, PARENT, trainable=False)
            unload_adapter(loaded, child)
            for r in judged:
                say(
                    f"{method} {canary} planted={r.planted} {r.reference}: parent p {r.parent_p:.3g}, "
                    f"child p {r.child_p if r.child_p is None else f'{r.child_p:.3g}'}, {r.verdict} "
                    f"(unlearn {unlearn_seconds:.1f} s, verify {r.verify_seconds:.1f} s)"
                )
                records.append(replace(r, unlearn_seconds=unlearn_seconds))
    return CanaryResult(
        config=config,
        machine=Machine.here(loaded.device),
        planted=frames.planted,
        parent=parent,
        records=records,
        summary=summarise(records, config.evidence.alpha),
        seconds_total=time.perf_counter() - started,
        command=command,
    )


def _with_mains_utility_gate(
    record: CanaryRecord, figures: dict[str, Any], config: EvidenceConfig
) -> CanaryRecord:
    """The verdict as main's verifier gave it before the utility gate read kept / lost / inconclusive:
    failed whenever the AUC difference's lower bound reached below ``-utility_margin``."""
    low = figures["evidence"]["utility"]["difference"]["low"]
    if low is None or low >= -config.utility_margin or record.verdict == "failed":
        return record
    reason = f"utility lost (main's gate): AUC difference's lower bound {low:.4f} < -{config.utility_margin}"
    return replace(record, verdict="failed", reasons=[*record.reasons, reason])


def _record(canary: str, method: str, planted: bool, n: int, figures: dict[str, Any]) -> CanaryRecord:
    found = figures.get("evidence")
    if found is None:  # the verifier could not calibrate: no figures, a failed verdict
        raise ValueError(f"the verifier could not judge {canary}: {figures.get('reasons')}")
    parent, child = found["parent"], found["child"]
    return CanaryRecord(
        canary=canary,
        method=method,
        planted=planted,
        forget_samples=n,
        parent_p=parent["p_value"],
        parent_excess=parent["excess"]["value"],
        child_p=child["p_value"],
        child_p_lower=child["p_value_lower"],
        child_excess=child["excess"]["value"],
        verdict=figures["verdict"],
        reasons=list(figures["reasons"]),
        unlearn_seconds=0.0,
        verify_seconds=float(figures.get("seconds") or 0.0),
    )


# ---------------------------------------------------------------------------------------------- the edge


def config_from_settings(settings: Settings, model: ModelConfig, **values: Any) -> CanaryConfig:
    """A ``CanaryConfig`` with the service's configured method and verifier (``EvidenceConfig``, sizes)."""
    job = job_settings_from(settings)
    sizes = VerificationSizes(
        job.valid_samples, job.max_verify_samples, job.reference_users, job.reference_samples
    )
    methods = values.pop("methods", None) or (job.method,)
    configs = {job.method: dict(job.method_config), **values.pop("method_configs", {})}
    return CanaryConfig(
        model=model, methods=methods, method_configs=configs, evidence=job.thresholds, sizes=sizes, **values
    )


def command(
    model: Annotated[
        str, typer.Option(help="tiny (CPU, minutes) or smollm2 (the real model) or a folder")
    ] = ("tiny"),
    canaries: Annotated[int, typer.Option(help="canary users, each planted with probability 1/2")] = 32,
    copies: Annotated[int, typer.Option(help="extra copies of a planted canary's samples")] = 4,
    methods: Annotated[str | None, typer.Option(help="comma-separated (default: the configured)")] = None,
    method_config: Annotated[
        str | None, typer.Option(help="JSON config for every method (default: the configured one's)")
    ] = None,
    max_steps: Annotated[int, typer.Option(help="the parent's training steps")] = 300,
    population: Annotated[int, typer.Option(help="ordinary users (10 ratings each)")] = 120,
    population_noise: Annotated[
        float, typer.Option(help="probability that a population rating goes against its taste")
    ] = 0.2,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="JSON file")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Positive controls: canaries planted with probability 1/2, v1 trained, every canary erased and
    verified through the service's verifier; power, false positives, verdicts, leakage lower bound."""
    if threads is not None:
        torch.set_num_threads(threads)
    settings = Settings()
    names = tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None
    given = json.loads(method_config) if method_config else {}
    overrides = {name: given for name in names or (settings.unlearning_method,)}
    config = config_from_settings(
        settings,
        ModelConfig(base=model, cache_dir=str(settings.models_dir)),
        methods=names,
        method_configs=overrides if method_config else {},
        canaries=canaries,
        copies=copies,
        population=population,
        population_noise=population_noise,
        recipe=replace(PARENT_RECIPE, max_steps=max_steps, eval_every=max_steps),
        seed=seed,
    )
    line = f"e2u bench canaries --model {model} --canaries {canaries} --copies {copies} --seed {seed}"
    line += f" --max-steps {max_steps} --population {population} --population-noise {population_noise}" + (
        f" --methods {methods}" if methods else ""
    )
    line += f" --method-config '{method_config}'" if method_config else ""
    result = run_canaries(config, typer.echo, line)
    json_path = out or RESULTS / f"canaries_{Path(model).name}.json"
    save_json(result.to_dict(), json_path)
    for text in result.lines():
        typer.echo(text)
    typer.echo(f"wrote {json_path} ({result.seconds_total:.0f} s)")


# ------------------------------------------------------------------------------- verification's cost


class _Quiet:
    """A ``core.ml.unlearning_job.JobProgress`` that hears nothing."""

    def unlearning_started(self) -> None: ...

    def unlearning_step(self, done: int, total: int) -> None: ...

    def verification_started(self) -> None: ...


def verify_cost(
    model: ModelConfig,
    data: PreparedData,
    folder: Path,
    jobs: int,
    warm: bool,
    method: str = "e2urec",
    method_config: dict[str, Any] | None = None,
    sizes: VerificationSizes | None = None,
    evidence_config: EvidenceConfig | None = None,
    log: Log | None = None,
) -> list[dict[str, float]]:
    """Seconds of unlearn, verify (and warm-up) of ``jobs`` jobs in a row, as the service runs them: job k
    erases the k-th training user (in a hash order) from the version job k - 1 made, through
    ``unlearn_and_verify``; with ``warm``, each new version's ``warm_version_scores`` runs after it (as the
    pipeline does after promotion).  The users erased have 20 to 40 training samples.  ``folder`` holds
    the first parent (v1); the children go beside it."""
    say = log or (lambda _message: None)
    sizes, evidence_config = sizes or VerificationSizes(), evidence_config or EvidenceConfig()
    loaded = load_base(model)
    train = data.split("train")
    sizes_by_user = train["user_id"].value_counts()
    small = [u for u, n in sizes_by_user.items() if 20 <= n <= 40]  # like a 20-rating request
    users = sorted(small, key=lambda u: hashlib.sha256(f"cost:{u}".encode()).hexdigest())
    catalog = Catalog.from_frames(data.items, data.users)
    scorer = Scorer(loaded, PromptBuilder(loaded.tokenizer, catalog, loaded.prompt), 16)
    plan = UnlearningPlan(method, method_config or {}, evidence_config, sizes)
    parent, rows = folder, []
    for k in range(jobs):
        forget = train[train["user_id"] == users[k]].reset_index(drop=True)
        retain = train[~train["user_id"].isin(users[: k + 1])].reset_index(drop=True)
        job = JobData(forget, retain, data.split("valid"), data.split("holdout"), catalog)
        child = folder.parent / f"{folder.name}-{'warm' if warm else 'cold'}-{k + 1}"
        candidate = unlearn_and_verify(loaded, parent, job, plan, child, {}, _Quiet(), f"cost{k}")
        seconds = dict(candidate.figures["seconds"])
        if warm:
            started = time.perf_counter()
            warm_version_scores(scorer, child, job.holdout, job.valid, sizes)
            seconds["warm_up"] = time.perf_counter() - started
        scores = candidate.figures["scores"]
        cached = [
            scores[c]["computed"][s] for c in ("parent_cache", "child_cache") for s in ("adapter", "base")
        ]
        scored = sum(scores["forget"].values()) + sum(cached)  # forward passes of the verify step
        rows.append({"job": k + 1, "forget_samples": len(forget), "verify_scored": scored, **seconds})
        say(f"{'warm' if warm else 'cold'} job {k + 1}: {rows[-1]}")
        parent = child
    return rows


def cost_command(
    model: Annotated[str, typer.Option(help="tiny or smollm2 or a folder")] = "tiny",
    jobs: Annotated[int, typer.Option(help="jobs in a row, each erasing one user")] = 4,
    parent_steps: Annotated[int, typer.Option(help="v1's training steps (batch 8)")] = 60,
    out: Annotated[Path | None, typer.Option(help="JSON file")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Verify against unlearn seconds per job, jobs in a row on the prepared data, without and with the
    promoted version's score warm-up (``warm_version_scores``), with the configured method and verifier."""
    if threads is not None:
        torch.set_num_threads(threads)
    settings = Settings()
    job = job_settings_from(settings)
    sizes = VerificationSizes(
        job.valid_samples, job.max_verify_samples, job.reference_users, job.reference_samples
    )
    config = ModelConfig(base=model, cache_dir=str(settings.models_dir))
    data = load_prepared(settings.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        v1 = Path(tmp) / "v1"
        loaded = load_base(config)
        new_adapter(loaded, PARENT_RECIPE.lora, PARENT, seed=0)
        recipe = replace(PARENT_RECIPE, batch_size=8, max_steps=parent_steps, eval_every=parent_steps)
        train_adapter(
            scorer_for(loaded, data), PARENT, data.split("train"), data.split("valid"), recipe, False
        )
        save_adapter(loaded, PARENT, v1)
        del loaded
        runs = {
            name: verify_cost(
                config, data, v1, jobs, warm, job.method, job.method_config, sizes, job.thresholds, typer.echo
            )
            for name, warm in (("before", False), ("after", True))
        }
    summary = {
        name: {
            part: {"mean": float(np.mean([r[part] for r in rows[1:]])), "jobs": len(rows) - 1}
            for part in rows[0]
            if part in ("unlearn", "verify", "warm_up", "verify_scored")
        }
        for name, rows in runs.items()
    }
    record = {
        "benchmark": "verify_cost",
        "command": f"e2u bench verify-cost --model {model} --jobs {jobs} --parent-steps {parent_steps}",
        "machine": Machine.here(torch.device("cpu")).to_dict(),
        "method": job.method,
        "sizes": asdict(sizes),
        "steady_state": "jobs 2.. of each chain (job 1's parent, v1, is cold in both)",
        "summary": summary,
        "jobs": runs,
    }
    json_path = out or RESULTS / f"canaries_verify_cost_{Path(model).name}.json"
    save_json(record, json_path)
    typer.echo(json.dumps(summary, indent=1))
    typer.echo(f"wrote {json_path}")
