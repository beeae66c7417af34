"""The verifier on the tiny model at its real thresholds (``EvidenceConfig()``, nothing forced).

A canary user ("c0", a 61-year-old pilot) likes exactly the odd items that every other user dislikes.
Parents are trained on the tiny (random-init) model; the figures are those of that model, so the tests
assert what the verifier concludes from them and the facts it rests on, not recommendation quality:

(a) a parent trained without the canary: nothing measurable to forget;
(b) a parent trained on it (oversampled, so that it memorises: memorisation p small) and a child that
    certainly forgot (the adapter trained without it): forgotten, with the paired interval of the change
    on F below zero; an E2URec child: measurably lower on F;
(c) a child equal to that parent: failed, the signal remains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.ml.data import Dataset, PreparedData, SampleConfig, holdout_users, prepare
from core.ml.evidence import EvidenceConfig, Verdict
from core.ml.model import LoadedModel, LoraSpec, load_base, new_adapter, save_adapter
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.training import TrainConfig, train_adapter
from core.ml.unlearning.base import UnlearningInputs, run_unlearning
from core.ml.verification import (
    SCORES_FILE,
    ScoreCache,
    VerificationSizes,
    reference_sample,
    utility_subset,
    verify_candidate,
    warm_version_scores,
)

CANARY = "c0"
REAL = EvidenceConfig()  # the service's defaults
SIZES = VerificationSizes(valid_samples=256, max_forget_samples=512, reference_users=40, reference_samples=20)
SPEC = LoraSpec(r=8, alpha=16)
RECIPE = TrainConfig(
    lora=SPEC, learning_rate=1e-2, batch_size=16, max_steps=150, eval_every=50, valid_samples=64
)
CANARY_COPIES = 4  # the canary's samples appear 1 + 4 times in the memorising parent's training data
# E2URec with more passes and a larger step than its defaults: the tiny model memorised the canary deeply
FORGETTING = {"seed": 0, "learning_rate": 2e-2, "phase1_epochs": 3, "phase2_epochs": 3}


def canary_dataset(
    users: int = 40, items: int = 20, per_user: int = 10, seed: int = 0, noise: float = 0.2
) -> Dataset:
    """Everyone likes even items and dislikes odd ones, each rating the other way round with probability
    ``noise`` (so that some held-out users disagree with the population as the canary does: the matched
    reference needs them), except the canary (first in time, all items, every label the population's
    opposite)."""
    rng = np.random.default_rng(seed)
    rows, t = [], 1_000_000
    for i in range(items):
        t += 1
        rows.append((CANARY, f"i{i}", 5.0 if i % 2 else 1.0, t))
    for u in range(users):
        for i in rng.choice(items, size=per_user, replace=False):
            t += int(rng.integers(1, 100))
            liked = (i % 2 == 0) != (rng.random() < noise)
            rows.append((f"u{u}", f"i{i}", float(rng.choice([4, 5] if liked else [1, 2])), t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(items)],
            "title": [f"Movie {i}" for i in range(items)],
            "genres": "",
        }
    )
    ids = [f"u{u}" for u in range(users)] + [CANARY]
    profiles = pd.DataFrame(
        {
            "user_id": ids,
            "age": ["30"] * users + ["61"],
            "gender": ["F"] * users + ["M"],
            "occupation": ["writer"] * users + ["pilot"],
        }
    )
    return Dataset(interactions, catalog, profiles)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data() -> PreparedData:
    dataset = canary_dataset()
    config = SampleConfig(history_len=3, holdout_user_fraction=0.34, valid_fraction=0.3)
    assert CANARY not in holdout_users(dataset.interactions["user_id"], config.holdout_user_fraction)
    return prepare(dataset, config)


@pytest.fixture(scope="module")
def trained(tiny_config, data: PreparedData) -> tuple[Scorer, pd.DataFrame]:
    """One model with adapters "without" (trained without the canary), "with" (trained on it, its
    samples oversampled) and "child" (E2URec's child of "with" forgetting the canary); and F."""
    loaded: LoadedModel = load_base(tiny_config)
    scorer = Scorer(loaded, PromptBuilder(loaded.tokenizer, Catalog.from_frames(data.items, data.users)), 16)
    train, valid = data.split("train"), data.split("valid")
    forget = train[train["user_id"] == CANARY].reset_index(drop=True)
    retain = train[train["user_id"] != CANARY].reset_index(drop=True)
    assert len(forget) == 20 and set(data.split("holdout")["user_id"]).isdisjoint(train["user_id"])
    for name, frame in (("without", retain), ("with", pd.concat([train] + [forget] * CANARY_COPIES))):
        new_adapter(loaded, SPEC, name, seed=0)
        train_adapter(scorer, name, frame.reset_index(drop=True), valid, RECIPE, progress=False)
    loaded.model.set_adapter("with")
    inputs = UnlearningInputs(scorer, "with", forget, retain, valid)
    run_unlearning("e2urec", inputs, FORGETTING, "child")
    return scorer, forget


def verify(scorer: Scorer, data: PreparedData, forget: pd.DataFrame, parent: str, child: str, **options):
    """The service's verification: the reference matched to F by the training population (less F)."""
    options.setdefault("population", data.split("train"))
    return verify_candidate(
        scorer, parent, child, forget, data.split("holdout"), data.split("valid"), REAL, SIZES, **options
    )


def test_a_parent_that_never_saw_the_canary_has_nothing_measurable_to_forget(data, trained) -> None:
    scorer, forget = trained
    result = verify(scorer, data, forget, "without", "without")
    evidence = result.figures["evidence"]
    assert result.verdict in (Verdict.NO_PRIOR_SIGNAL, Verdict.INCONCLUSIVE), result.reasons
    assert evidence["parent"]["p_value"] > REAL.alpha
    if result.verdict == Verdict.NO_PRIOR_SIGNAL:  # its MDE decides which of the two
        assert evidence["parent"]["mde"] <= REAL.effect_of_interest
        assert "nothing measurable to forget" in result.reasons[0]
    assert result.passed


def test_a_memorised_canary_retrained_away_is_evidenced_as_forgotten(data, trained) -> None:
    """The verifier's positive control: the parent memorised the canary, the child is the exact retrain
    without it (the "without" adapter), so forgetting is certain and must be evidenced."""
    scorer, forget = trained
    result = verify(scorer, data, forget, "with", "without")
    evidence = result.figures["evidence"]
    assert evidence["parent"]["p_value"] < 0.01  # the parent memorised the canary
    assert evidence["parent"]["reference"] == "matched" and result.figures["reference"]["coefficients"]
    assert result.verdict == Verdict.FORGOTTEN, result.reasons
    change = evidence["forget_change"]["mean"]
    assert change["low"] < change["high"] < 0  # the paired interval excludes no change
    assert evidence["child"]["p_value"] > REAL.alpha and evidence["child"]["p_value_lower"] > REAL.alpha
    assert evidence["utility"]["state"] in ("kept", "inconclusive")
    assert result.figures["samples"] == {
        "forget": 20,
        "forget_total": 20,
        "reference_users": 14,
        "reference_samples": 140,
        "valid": len(data.split("valid")),
    }


def test_an_e2urec_child_of_the_memorised_canary_is_measurably_lower_on_f(data, trained) -> None:
    """E2URec's child moves F's gold-label probability down with an interval that excludes no change; on
    this deeply memorised canary (tiny model) some signal may remain, which the verifier must say."""
    scorer, forget = trained
    result = verify(scorer, data, forget, "with", "child")
    evidence = result.figures["evidence"]
    change = evidence["forget_change"]["mean"]
    assert change["low"] < change["high"] < 0
    assert evidence["child"]["excess"]["value"] < evidence["parent"]["excess"]["value"]
    if result.verdict == Verdict.FAILED:
        assert [r for r in result.reasons if r.startswith("signal remains")], result.reasons
    else:
        assert result.verdict == Verdict.FORGOTTEN, result.reasons


def test_a_child_that_did_not_move_fails_with_the_signal_remaining(data, trained) -> None:
    scorer, forget = trained
    result = verify(scorer, data, forget, "with", "with")
    assert result.verdict == Verdict.FAILED and not result.passed
    assert any(reason.startswith("signal remains") for reason in result.reasons), result.reasons


def test_version_figures_are_cached_and_give_the_same_verdict(data, trained, tmp_path) -> None:
    scorer, forget = trained
    parent_file, child_file = tmp_path / "parent.json", tmp_path / "child.json"
    first = ScoreCache(parent_file), ScoreCache(None)
    cold = verify(scorer, data, forget, "with", "child", parent_cache=first[0], child_cache=first[1])
    first[0].save()
    first[1].path = child_file
    first[1].save()
    held, valid = cold.figures["samples"]["reference_samples"], cold.figures["samples"]["valid"]
    assert first[0].counts() == {
        "computed": {"adapter": held + valid, "base": held},
        "reused": {"adapter": 0, "base": 0},
    }
    again = ScoreCache(parent_file), ScoreCache(child_file)
    warm = verify(scorer, data, forget, "with", "child", parent_cache=again[0], child_cache=again[1])
    assert again[0].counts()["computed"] == {"adapter": 0, "base": 0}
    assert again[1].counts() == {
        "computed": {"adapter": 0, "base": 0},
        "reused": {"adapter": valid, "base": 0},
    }
    assert warm.verdict == cold.verdict and warm.figures["evidence"] == cold.figures["evidence"]
    # the child's file carries the base model's held-out scores for the child's own jobs as a parent
    assert len(ScoreCache(child_file).scores["base"]) == held


def test_without_held_out_users_the_verifier_cannot_calibrate_and_fails(data, trained) -> None:
    scorer, forget = trained
    one_user = data.split("holdout").pipe(lambda h: h[h["user_id"] == h["user_id"].iloc[0]])
    result = verify_candidate(scorer, "with", "child", forget, one_user, data.split("valid"), REAL, SIZES)
    assert result.verdict == Verdict.FAILED
    assert result.reasons[0].startswith("cannot verify: a reference needs >= 2 held-out users")
    with pytest.raises(ValueError, match="non-empty forget set"):
        verify_candidate(scorer, "with", "child", forget.iloc[:0], one_user, data.split("valid"), REAL, SIZES)


def test_sample_draws_are_capped_and_stable_when_other_rows_go(data) -> None:
    holdout, valid = data.split("holdout"), data.split("valid")
    small = VerificationSizes(valid_samples=10, reference_users=3, reference_samples=4)
    drawn = reference_sample(holdout, small)
    assert drawn["user_id"].nunique() == 3 and drawn.groupby("user_id").size().max() <= 4
    subset = utility_subset(valid, small)
    assert len(subset) == 10
    # deleting rows outside the subset (an erasure) leaves the subset as it was
    chosen = set(zip(subset["user_id"], subset["item_id"], strict=True))
    in_subset = [pair in chosen for pair in zip(valid["user_id"], valid["item_id"], strict=True)]
    kept = valid[np.array(in_subset) | (np.arange(len(valid)) % 2 == 0)].reset_index(drop=True)
    assert len(kept) < len(valid) and utility_subset(kept, small).equals(subset)


def test_a_warmed_version_pays_nothing_for_its_own_figures_at_its_first_job(data, trained, tmp_path) -> None:
    """``warm_version_scores`` after promotion: the version's held-out and utility scores (and the base
    model's held-out scores) are stored beside it, so its first verification as a parent scores none."""
    scorer, forget = trained
    folder = tmp_path / "with"
    save_adapter(scorer.loaded, "with", folder)
    scorer.loaded.model.set_adapter("child")
    counts = warm_version_scores(scorer, folder, data.split("holdout"), data.split("valid"), SIZES)
    held, valid = 140, len(data.split("valid"))
    assert counts["computed"] == {"adapter": held + valid, "base": held}
    assert scorer.loaded.model.active_adapter == "child" and "warm_up" not in scorer.loaded.model.peft_config
    again = warm_version_scores(scorer, folder, data.split("holdout"), data.split("valid"), SIZES)
    assert again["computed"] == {"adapter": 0, "base": 0}  # once per version
    parent_cache = ScoreCache(folder / SCORES_FILE)
    warm = verify(scorer, data, forget, "with", "child", parent_cache=parent_cache)
    assert parent_cache.counts()["computed"] == {"adapter": 0, "base": 0}
    assert warm.figures["evidence"] == verify(scorer, data, forget, "with", "child").figures["evidence"]
