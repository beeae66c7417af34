"""Unlearning methods on the tiny random-init model.  It is untrained: these tests assert behaviour (what
goes down, what stays bit-for-bit the same, what is reproducible, what is refused), never quality.

The data make the forget set's information distinct: the two forgotten users have their own profile
and like every movie, while everyone else likes the even-numbered ones.  A parent trained on all of it
leans towards "Yes" for those two; unlearning them must take that away from F more than from R.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.ml import metrics
from core.ml.data import PreparedData, select_forget
from core.ml.model import (
    LoadedModel,
    LoraSpec,
    base_state,
    load_adapter,
    load_base,
    lora_state,
    new_adapter,
    save_adapter,
)
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.scoring import Scorer
from core.ml.training import TrainConfig, train_adapter
from core.ml.unlearning import (
    METHODS,
    Progress,
    UnlearningError,
    UnlearningInputs,
    get_method,
    run_unlearning,
)
from core.ml.unlearning.e2urec import E2URecConfig, augment_target_gap, forgetting_teacher
from core.ml.unlearning.forget_retain import ForgetRetainConfig
from core.ml.unlearning.npo import NPOConfig
from core.ml.unlearning.optimisation import Budget, budget
from core.ml.unlearning.retrain import RetrainConfig
from tests.unlearning_cases import BUILT_IN, FORGET_USERS, distinct_forget_data

SPEC = LoraSpec(r=8, alpha=16)
RECIPE = TrainConfig(
    lora=SPEC, learning_rate=1e-2, batch_size=8, max_steps=40, eval_every=40, valid_samples=64
)
RETRAIN_RECIPE = replace(RECIPE, max_steps=15, eval_every=15)  # shorter: these tests need behaviour only
# approximate methods get a larger learning rate than their defaults so that a few steps show clearly
FAST = {"learning_rate": 1e-2}


def method_config(name: str, seed: int = 0) -> dict[str, object]:
    return {"seed": seed, "train": RETRAIN_RECIPE.to_dict()} if name == "retrain" else {"seed": seed, **FAST}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return distinct_forget_data()


@pytest.fixture(scope="module")
def parent_folder(tiny_config, data, tmp_path_factory) -> Path:
    """A parent adapter trained on all training samples (validation = train: both classes, tiny set)."""
    loaded = load_base(tiny_config)
    new_adapter(loaded, SPEC, "parent", seed=0)
    scorer = Scorer(loaded, PromptBuilder(loaded.tokenizer, Catalog.from_frames(data.items, data.users)))
    train = data.split("train")
    train_adapter(scorer, "parent", train, train, RECIPE, progress=False)
    folder = tmp_path_factory.mktemp("adapters") / "parent"
    save_adapter(loaded, "parent", folder)
    return folder


@pytest.fixture(scope="module")
def pristine(tiny_config) -> LoadedModel:
    return load_base(tiny_config)


@pytest.fixture
def inputs(pristine, data, parent_folder) -> UnlearningInputs:
    # a fresh copy of the base per test; the tokenizer (the slow part to load) is shared
    loaded = LoadedModel(
        copy.deepcopy(pristine.model), pristine.tokenizer, pristine.label_ids, pristine.device
    )
    load_adapter(loaded, parent_folder, "parent")
    scorer = Scorer(loaded, PromptBuilder(loaded.tokenizer, Catalog.from_frames(data.items, data.users)))
    forget, retain = select_forget(data.split("train"), users=FORGET_USERS)
    return UnlearningInputs(scorer, "parent", forget, retain, data.split("train"))


def mean_gold_log_prob(scorer: Scorer, adapter: str, frame) -> float:
    scorer.loaded.model.set_adapter(adapter, inference_mode=True)
    probs = scorer.score(frame)
    return float(np.mean(np.log(metrics.gold_probability(frame["label"].to_numpy(), probs))))


def test_every_built_in_method_is_registered() -> None:
    assert BUILT_IN == ["e2urec", "label_flip", "neggrad", "npo", "retrain"]


@pytest.mark.parametrize("name", BUILT_IN)
class TestEveryMethod:
    """One contract, every registered method."""

    def test_forgets_f_more_than_r_and_changes_only_its_own_lora(self, name, inputs) -> None:
        model, scorer = inputs.scorer.loaded.model, inputs.scorer
        frozen, parent_before = base_state(model), lora_state(model, "parent")
        f_before = mean_gold_log_prob(scorer, "parent", inputs.forget)
        r_before = mean_gold_log_prob(scorer, "parent", inputs.retain)
        progress: list[tuple[str, int, int]] = []

        report = run_unlearning(
            name, inputs, method_config(name), "child", Progress(lambda *a: progress.append(a))
        )
        assert not any(p.requires_grad for p in model.parameters())  # everything is left frozen

        f_drop = f_before - mean_gold_log_prob(scorer, "child", inputs.forget)
        r_change = abs(mean_gold_log_prob(scorer, "child", inputs.retain) - r_before)
        assert f_drop > 0.005, f"forget-set gold log-likelihood fell by only {f_drop:.4f}"
        assert r_change < f_drop
        # the base is bit-for-bit the same, the parent too, and it is still loaded beside the child
        assert all(torch.equal(v, frozen[k]) for k, v in base_state(model).items())
        assert all(torch.equal(v, parent_before[k]) for k, v in lora_state(model, "parent").items())
        assert set(model.peft_config) == {"parent", "child"}
        child = lora_state(model, "child")
        assert len(child) == len(parent_before)
        assert any(
            not torch.equal(child[k.replace(".parent.", ".child.")], v) for k, v in parent_before.items()
        )
        # the report says what ran, and round-trips through JSON into the same typed config
        assert report.method == name and report.steps >= 1 and report.seconds > 0
        assert report.trainable_parameters == sum(v.numel() for v in child.values())
        assert report.peak_memory_bytes > 0
        method = get_method(name)
        typed = method.config_class.from_dict(json.loads(json.dumps(report.to_dict()))["config"])
        assert typed == method.config_class.from_dict(method_config(name))
        assert progress and progress[-1][1] == progress[-1][2]

    def test_same_seed_same_adapter_other_seed_other_adapter(self, name, inputs) -> None:
        model = inputs.scorer.loaded.model
        run_unlearning(name, inputs, method_config(name, seed=3), "run1")
        run_unlearning(name, inputs, method_config(name, seed=3), "run2")
        run_unlearning(name, inputs, method_config(name, seed=4), "run3")
        a, b, c = (lora_state(model, n) for n in ("run1", "run2", "run3"))
        assert all(torch.equal(v, b[k.replace(".run1.", ".run2.")]) for k, v in a.items())
        assert any(not torch.equal(v, c[k.replace(".run1.", ".run3.")]) for k, v in a.items())

    def test_refuses_unknown_options_and_a_taken_name(self, name, inputs) -> None:
        with pytest.raises(UnlearningError, match="unknown option"):
            run_unlearning(name, inputs, {**method_config(name), "epochz": 2}, "child")
        with pytest.raises(UnlearningError, match="already taken"):
            run_unlearning(name, inputs, method_config(name), "parent")


@pytest.mark.parametrize(
    ("config_class", "values", "message"),
    [
        (E2URecConfig, {"alpha": -0.1}, "alpha must be >= 0"),
        (E2URecConfig, {"w": 1.5}, r"w must be in \[0, 1\]"),
        (E2URecConfig, {"w": -0.01}, r"w must be in \[0, 1\]"),
        (E2URecConfig, {"temperature": 0}, "temperature must be > 0"),
        (E2URecConfig, {"phase2_epochs": 0}, "phase2_epochs must be > 0"),
        (E2URecConfig, {"augment_epochs": -1}, "augment_epochs must be > 0"),
        (E2URecConfig, {"teacher_space": "probs"}, "teacher_space must be one of"),
        (E2URecConfig, {"augment_margin": -0.1}, "augment_margin must be >= 0"),
        (E2URecConfig, {"augment_max_rounds": 0}, "augment_max_rounds must be >= 1"),
        (E2URecConfig, {"learning_rate": 0}, "learning_rate must be > 0"),
        (E2URecConfig, {"retain_ratio": 0}, "retain_ratio must be > 0"),
        (E2URecConfig, {"batch_size": 0}, "batch_size must be >= 1"),
        (NPOConfig, {"beta": 0}, "beta must be > 0"),
        (NPOConfig, {"epochs": 0}, "epochs must be > 0"),
        (NPOConfig, {"forget_weight": 0}, "forget_weight must be > 0"),
    ],
)
def test_configs_reject_nonsense_with_a_clear_error(config_class, values, message) -> None:
    with pytest.raises(UnlearningError, match=f"{config_class.__name__}: {message}"):
        config_class.from_dict(values)


def test_configs_round_trip_through_json() -> None:
    for config in (
        E2URecConfig(alpha=1.5, w=0.3, temperature=2.0),
        NPOConfig(beta=0.5),
        RetrainConfig(train=RECIPE),
    ):
        assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(UnlearningError, match="bad train recipe"):
        RetrainConfig.from_dict({"train": {"learning_rate": -1}})


def test_empty_forget_set_and_overlapping_retain_are_refused(inputs) -> None:
    empty = UnlearningInputs(inputs.scorer, "parent", inputs.forget.head(0), inputs.retain, inputs.valid)
    with pytest.raises(UnlearningError, match=r"forget set is empty \(e2urec needs one\)"):
        run_unlearning("e2urec", empty, {}, "child")
    assert not METHODS["retrain"].needs_forget_set  # the exact retrain never reads F
    retain = pd.concat([inputs.retain.head(3), inputs.forget.head(2)])
    overlapping = UnlearningInputs(inputs.scorer, "parent", inputs.forget, retain, inputs.valid)
    with pytest.raises(UnlearningError, match="also in the retain data"):
        run_unlearning("e2urec", overlapping, {}, "child")
    with pytest.raises(UnlearningError, match="unknown unlearning method"):
        run_unlearning("amnesia", inputs, {}, "child")


def test_forgetting_teacher_takes_away_only_what_the_augmented_model_gained() -> None:
    parent = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    augmented = torch.tensor([[2.0, -1.0], [0.0, 1.0]])  # row 0: surer of "Yes"; row 1: surer of "No"
    teacher = forgetting_teacher(parent, augmented, alpha=2.0)
    torch.testing.assert_close(teacher, torch.tensor([[-1.0, 0.0], [0.5, -0.5]]))
    torch.testing.assert_close(forgetting_teacher(parent, augmented, alpha=0.0), parent)
    # in log-prob space a shift common to both logits changes nothing
    shifted = forgetting_teacher(parent, parent + 3.0, alpha=2.0, space="log_probs")
    torch.testing.assert_close(shifted, torch.log_softmax(parent, dim=-1))


def test_step_budget_follows_the_request_size() -> None:
    config = E2URecConfig(batch_size=8, min_steps=4)
    assert budget(800, 1.0, config) == Budget(steps=100, batch_size=8)
    assert budget(800, 2.5, config) == Budget(steps=250, batch_size=8)
    # a small request keeps its passes over F but gets smaller batches, so that it takes min_steps updates
    assert budget(8, 1.0, config) == Budget(steps=4, batch_size=2)
    assert budget(14, 1.0, config) == Budget(steps=4, batch_size=4)
    assert budget(14, 2.0, config) == Budget(steps=4, batch_size=8)
    assert budget(3, 0.1, config) == Budget(steps=1, batch_size=1)
    assert budget(8000, 1.0, E2URecConfig(max_steps=50)).steps == 50


def test_e2urec_fits_the_augmented_model_inside_its_timer_and_frees_it(inputs) -> None:
    config = {**FAST, "augment_epochs": 2.0, "phase1_epochs": 1.0, "phase2_epochs": 2.0}
    phases: list[str] = []
    report = run_unlearning(
        "e2urec", inputs, config, "child", Progress(lambda phase, done, total: phases.append(phase))
    )
    details, n, typed = report.details, len(inputs.forget), E2URecConfig.from_dict(config)
    plans = {
        "augment": budget(n, 2.0, typed),
        "phase1": budget(n, 1.0, typed),
        "phase2": budget(n, 2.0, typed),
    }
    assert details["steps"] == {phase: plan.steps for phase, plan in plans.items()}
    assert details["batch_size"] == {phase: plan.batch_size for phase, plan in plans.items()}
    assert report.steps == sum(details["steps"].values())
    assert list(dict.fromkeys(phases)) == ["augment", "phase1", "phase2"]
    assert report.seconds >= sum(details["seconds"].values()) > details["seconds"]["augment"] > 0
    assert set(inputs.scorer.loaded.model.peft_config) == {"parent", "child"}  # A is gone
    gold = details["forget_gold_prob"]  # A over-fitted F; the teacher is less sure than the parent
    assert gold["augmented"] > gold["parent"] > gold["forgetting_teacher"]
    assert details["retain_samples"] == len(inputs.forget)  # retain_ratio 1
    assert set(details["teacher_divergence"]) == set(metrics.DIVERGENCES)


def test_augment_target_gap_is_the_margin_or_half_the_room_the_parent_leaves() -> None:
    assert augment_target_gap(0.6, 0.05) == pytest.approx(0.05)
    assert augment_target_gap(0.96, 0.05) == pytest.approx(0.02)  # 0.05 above 0.96 is out of reach
    assert augment_target_gap(0.6, 0.0) == 0.0


def test_e2urec_gives_the_augmented_model_more_rounds_until_it_over_fits_f(inputs) -> None:
    """A that barely moves (a tiny learning rate) is not allowed to define the teacher after one round: it
    gets up to ``augment_max_rounds`` rounds, and the report says the target gap was not reached."""
    n, typed = len(inputs.forget), E2URecConfig(**FAST)
    slow = {**FAST, "augment_learning_rate": 1e-7, "augment_max_rounds": 3, "phase2_epochs": 0.5}
    report = run_unlearning("e2urec", inputs, slow, "child")
    augment = report.details["augment"]
    assert augment["rounds"] == 3 and augment["reached"] is False
    assert len(augment["gold_prob_gap_per_round"]) == 3
    assert max(augment["gold_prob_gap_per_round"]) < augment["target_gap"] == pytest.approx(0.05)
    assert report.details["steps"]["augment"] == 3 * budget(n, typed.augment_epochs, typed).steps
    inputs.scorer.loaded.model.delete_adapter("child")
    fast = run_unlearning("e2urec", inputs, {**FAST, "augment_max_rounds": 3, "phase2_epochs": 0.5}, "child")
    reached = fast.details["augment"]
    assert reached["reached"] is True and reached["rounds"] < 3
    assert reached["gold_prob_gap_per_round"][-1] >= reached["target_gap"]


def test_a_method_run_directly_refuses_another_method_s_config(inputs) -> None:
    with pytest.raises(UnlearningError, match="npo needs a NPOConfig, got ForgetRetainConfig"):
        get_method("npo").run(inputs, ForgetRetainConfig(), "child", Progress())


def test_retrain_refuses_a_recipe_whose_lora_cannot_hot_swap_with_the_parent(inputs) -> None:
    other = TrainConfig(lora=LoraSpec(r=4, alpha=8), max_steps=2)
    with pytest.raises(UnlearningError, match="differs from the parent's"):
        run_unlearning("retrain", inputs, {"train": other.to_dict()}, "child")


def test_a_method_without_its_loss_cannot_be_built() -> None:
    from core.ml.unlearning.forget_retain import ForgetRetainMethod

    class Incomplete(ForgetRetainMethod):
        name = "incomplete"

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]
