"""E2URec (Wang et al., 2024): efficient and effective unlearning of an LLM recommender.

Given the parent adapter P, the forget set F and a retain sample R (|R| = ``retain_ratio`` * |F|):

1. augmented model A: a copy of P's LoRA fine-tuned briefly on F, so that it over-fits F.  A must be
   measurably surer of F's gold labels than P (``augment_target_gap``) before it defines the teacher;
   else it gets another round of ``augment_epochs``, up to ``augment_max_rounds`` rounds in all, and the
   report says whether the target was reached (``details["augment"]``);
2. forgetting teacher on F: ``l_f = l_P - alpha * relu(l_A - l_P)`` on the two label logits at the answer
   position; it takes away exactly what A learned *extra* from F (an answer A grew more sure of is pushed
   down, one it grew less sure of is left alone);
3. remembering teacher: P itself on R (the active version, which has already forgotten earlier requests);
4. student S, initialised from P's LoRA tensors (only LoRA trains):
   phase 1 minimises KL(l_f || S) on F;
   phase 2 minimises ``w * (CE(S, R) + KL(P || S) on R) + (1 - w) * KL(l_f || S) on F``.

The teachers are fixed, so their logits are computed once (P on F and R, A on F) and A is freed before
the student trains.  Step budgets are passes over F (``*_epochs``), so the cost follows the request size.
The report's wall time covers all of it, A's fitting included (the reference code left it out).
``details["teacher_divergence"]`` (child vs forgetting teacher on F, for verification) is measured after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.ml import metrics
from core.ml.metrics import ResourceMeter
from core.ml.training import batches
from core.ml.unlearning.adapters import Child, PeftMethod, activate, clone_adapter
from core.ml.unlearning.base import UnlearningError, UnlearningInputs, UnlearningReport, register, require
from core.ml.unlearning.losses import cross_entropy, distill_kl, frame_logits, joint_logits, rows
from core.ml.unlearning.optimisation import OptimConfig, budget, optimise, paired_batches, retain_sample

TEACHER_SPACES = ("logits", "log_probs")


@dataclass(frozen=True)
class E2URecConfig(OptimConfig):
    """E2URec hyper-parameters (defaults: alpha and w from the reference code; two passes over F for A, one
    for each phase, so that the whole run costs about six passes over F, forward passes included).

    ``alpha``: strength of the forgetting teacher (>= 0; 0 makes it the parent).
    ``w``: phase 2 weight of remembering (retain CE + KL to P) versus forgetting, in [0, 1].
    ``temperature``: of both distillation KLs (> 0).
    ``augment_epochs`` / ``augment_learning_rate``: A's fitting on F (passes over F; its own lr, by default
    twice the student's, so that A over-fits F in few steps).
    ``phase1_epochs`` (>= 0) and ``phase2_epochs`` (> 0): the student's passes over F.
    ``teacher_space``: "logits" applies the formula to the raw label logits (as the paper does); "log_probs"
    to their 2-way log-softmax, which ignores a shift common to both logits.  The default stays "logits":
    in the one comparison run so far (the GPU proof's CPU rehearsal, tiny model, 32 forget users) it was
    closer to Retrain per user by 0.0027 bits [0.0011, 0.0047]: weak evidence, but none for a change
    (docs/benchmarks.md, "GPU proof").
    ``augment_margin`` (>= 0): A's mean gold-label probability on F must exceed P's by this much, or by half
    of what P leaves below 1 when that is smaller (a parent already at 0.98 cannot gain 0.05); checked after
    each round of ``augment_epochs``, at most ``augment_max_rounds`` (>= 1) rounds.
    """

    alpha: float = 2.0
    w: float = 0.6
    temperature: float = 1.0
    augment_epochs: float = 2.0
    augment_learning_rate: float | None = None  # None: twice ``learning_rate``
    phase1_epochs: float = 1.0
    phase2_epochs: float = 1.0
    teacher_space: str = "logits"
    augment_margin: float = 0.05
    augment_max_rounds: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.alpha >= 0, self, f"alpha must be >= 0, got {self.alpha}")
        require(0 <= self.w <= 1, self, f"w must be in [0, 1], got {self.w}")
        require(self.temperature > 0, self, f"temperature must be > 0, got {self.temperature}")
        require(self.augment_epochs > 0, self, f"augment_epochs must be > 0, got {self.augment_epochs}")
        require(
            self.augment_learning_rate is None or self.augment_learning_rate > 0,
            self,
            f"augment_learning_rate must be > 0 or None, got {self.augment_learning_rate}",
        )
        require(self.phase1_epochs >= 0, self, f"phase1_epochs must be >= 0, got {self.phase1_epochs}")
        require(self.phase2_epochs > 0, self, f"phase2_epochs must be > 0, got {self.phase2_epochs}")
        require(self.augment_margin >= 0, self, f"augment_margin must be >= 0, got {self.augment_margin}")
        require(
            self.augment_max_rounds >= 1,
            self,
            f"augment_max_rounds must be >= 1, got {self.augment_max_rounds}",
        )
        require(
            self.teacher_space in TEACHER_SPACES,
            self,
            f"teacher_space must be one of {TEACHER_SPACES}, got {self.teacher_space!r}",
        )


def forgetting_teacher(
    parent: torch.Tensor, augmented: torch.Tensor, alpha: float, space: str = "logits"
) -> torch.Tensor:
    """``l_P - alpha * relu(l_A - l_P)`` on [N, 2] label logits (or their log-softmax: "log_probs")."""
    if space == "log_probs":
        parent, augmented = F.log_softmax(parent, dim=-1), F.log_softmax(augmented, dim=-1)
    return parent - alpha * torch.relu(augmented - parent)


def _mean_gold_prob(logits: torch.Tensor, labels: np.ndarray) -> float:
    probs = torch.softmax(logits, dim=-1)[:, 0].numpy()
    return float(np.mean(np.where(labels.astype(bool), probs, 1 - probs)))


def augment_target_gap(parent_gold_prob: float, margin: float) -> float:
    """How far A's mean gold-label probability on F must rise above P's: ``margin``, or half of the room
    P leaves below 1 where that is smaller."""
    return min(margin, (1.0 - parent_gold_prob) / 2)


@register
class E2URec(PeftMethod[E2URecConfig]):
    name = "e2urec"
    config_class = E2URecConfig

    def unlearn(self, inputs: UnlearningInputs, config: E2URecConfig, child: Child) -> UnlearningReport:
        scorer, parent, model, child_name = inputs.scorer, inputs.parent_name, child.model, child.name
        augmented = f"{child_name}__augmented"
        if augmented in model.peft_config:
            raise UnlearningError(f"adapter name {augmented!r} is already taken")
        seconds: dict[str, float] = {}
        with ResourceMeter(scorer.loaded.device) as meter:
            clock = time.perf_counter()
            torch.manual_seed(config.seed)
            forget = inputs.forget.reset_index(drop=True)
            retain = retain_sample(inputs.retain, len(forget), config.retain_ratio, config.seed)
            epochs = {
                "augment": config.augment_epochs,
                "phase1": config.phase1_epochs,
                "phase2": config.phase2_epochs,
            }
            plans = {phase: budget(len(forget), n, config) for phase, n in epochs.items() if n > 0}
            steps = {phase: plans[phase].steps if phase in plans else 0 for phase in epochs}

            # 1. the parent's fixed logits: teacher on F (via l_f) and remembering teacher on R
            activate(model, parent, trainable=False)
            parent_forget = frame_logits(scorer, forget)
            parent_retain = frame_logits(scorer, retain)
            seconds["parent_logits"] = time.perf_counter() - clock

            # 2. the augmented model A: the parent over-fitted on F; only its logits on F are kept
            clock = time.perf_counter()
            clone_adapter(model, parent, augmented)
            augment_batches = batches(forget, plans["augment"].batch_size, config.seed + 2)

            def augment_loss(step: int) -> torch.Tensor:
                batch = next(augment_batches)
                return cross_entropy(scorer.logits(scorer.encode_frame(batch)), batch["label"])

            run_phase = partial(optimise, scorer, progress=child.progress, max_grad_norm=config.max_grad_norm)
            augment_lr = config.augment_learning_rate or 2 * config.learning_rate
            labels = forget["label"].to_numpy()
            parent_gold = _mean_gold_prob(parent_forget, labels)
            target_gap = augment_target_gap(parent_gold, config.augment_margin)
            augment_losses: list[float] = []
            gaps: list[float] = []
            while True:  # rounds of augment_epochs until A over-fits F by the target gap, or the cap
                augment_losses += run_phase(augmented, steps["augment"], augment_lr, augment_loss, "augment")
                augmented_forget = frame_logits(scorer, forget)
                gaps.append(_mean_gold_prob(augmented_forget, labels) - parent_gold)
                if gaps[-1] >= target_gap or len(gaps) >= config.augment_max_rounds:
                    break
            steps["augment"] *= len(gaps)
            activate(model, parent, trainable=False)  # never leave a deleted adapter active
            model.delete_adapter(augmented)
            seconds["augment"] = time.perf_counter() - clock

            # 3. the forgetting teacher
            teacher = forgetting_teacher(parent_forget, augmented_forget, config.alpha, config.teacher_space)

            # 4. the student, from the parent's LoRA tensors
            clock = time.perf_counter()
            clone_adapter(model, parent, child_name)
            temperature = config.temperature
            phase1_losses: list[float] = []
            if "phase1" in plans:
                phase1_batches = batches(forget, plans["phase1"].batch_size, config.seed + 3)

                def phase1_loss(step: int) -> torch.Tensor:
                    batch = next(phase1_batches)
                    logits = scorer.logits(scorer.encode_frame(batch))
                    return distill_kl(logits, teacher[rows(batch)], temperature)

                phase1_losses = run_phase(
                    child_name, steps["phase1"], config.learning_rate, phase1_loss, "phase1"
                )
            seconds["phase1"] = time.perf_counter() - clock

            clock = time.perf_counter()
            pairs = paired_batches(forget, retain, plans["phase2"].batch_size, config.seed + 4)

            def phase2_loss(step: int) -> torch.Tensor:
                forget_batch, retain_batch = next(pairs)
                forget_logits, retain_logits = joint_logits(scorer, forget_batch, retain_batch)
                remember = cross_entropy(retain_logits, retain_batch["label"]) + distill_kl(
                    retain_logits, parent_retain[rows(retain_batch)], temperature
                )
                forgetting = distill_kl(forget_logits, teacher[rows(forget_batch)], temperature)
                return config.w * remember + (1 - config.w) * forgetting

            phase2_losses = run_phase(
                child_name, steps["phase2"], config.learning_rate, phase2_loss, "phase2"
            )
            seconds["phase2"] = time.perf_counter() - clock

        details: dict[str, Any] = {
            "forget_samples": len(forget),
            "retain_samples": len(retain),
            "steps": steps,
            "batch_size": {phase: plan.batch_size for phase, plan in plans.items()},
            "seconds": seconds,
            # A must be surer of F's gold labels than P, and the teacher less sure: if not, A did not over-fit
            "augment": {
                "rounds": len(gaps),
                "max_rounds": config.augment_max_rounds,
                "target_gap": target_gap,
                "gold_prob_gap_per_round": gaps,  # A's mean gold P on F minus P's, after each round
                "reached": gaps[-1] >= target_gap,
            },
            "forget_gold_prob": {
                "parent": parent_gold,
                "augmented": _mean_gold_prob(augmented_forget, labels),
                "forgetting_teacher": _mean_gold_prob(teacher, labels),
            },
            "losses": {"augment": augment_losses, "phase1": phase1_losses, "phase2": phase2_losses},
        }
        report = self.report(config, meter, sum(steps.values()), child, details)
        # for verification: how far the child's answers on F are from the forgetting teacher's.  One forward
        # pass over F, after the timer: it is a verification figure, not part of unlearning.
        clock = time.perf_counter()
        child_probs = torch.sigmoid(scorer.margin(forget)).numpy()
        teacher_probs = torch.softmax(teacher, dim=-1)[:, 0].numpy()
        report.details["teacher_divergence"] = {
            name: fn(child_probs, teacher_probs) for name, fn in metrics.DIVERGENCES.items()
        }
        report.details["teacher_divergence_seconds"] = time.perf_counter() - clock
        return report
