"""The label logits the losses read, and the loss terms the methods combine.

Every logit here is the [B, 2] pair (positive word, negative word) at the answer position that
``Scorer.logits`` returns, so training, teachers and serving all read the same two numbers.  Fixed
(teacher) logits are computed once for a whole frame and looked up per batch with ``rows``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.ml.scoring import Scorer
from core.ml.training import label_targets


@torch.no_grad()
def frame_logits(scorer: Scorer, frame: pd.DataFrame) -> torch.Tensor:
    """[N, 2] label logits of the active adapter for every row, in row order (computed once: fixed)."""
    scorer.loaded.model.eval()
    sequences = scorer.encode_frame(frame)
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k]))  # little padding per batch
    out = torch.empty((len(sequences), 2))
    for start in range(0, len(order), scorer.batch_size):
        chunk = order[start : start + scorer.batch_size]
        out[chunk] = scorer.logits([sequences[k] for k in chunk]).cpu()
    return out


def joint_logits(scorer: Scorer, *frames: pd.DataFrame) -> list[torch.Tensor]:
    """One differentiable forward pass over several batches together; returns their logits apart."""
    sequences = [seq for frame in frames for seq in scorer.encode_frame(frame)]
    logits = scorer.logits(sequences)
    return list(torch.split(logits, [len(frame) for frame in frames]))


def rows(batch: pd.DataFrame) -> torch.Tensor:
    """The batch's row labels as an index into tensors computed once for the whole (0..n-1 indexed) frame."""
    return torch.tensor(batch.index.to_numpy(), dtype=torch.long)


def cross_entropy(logits: torch.Tensor, labels: pd.Series | np.ndarray) -> torch.Tensor:
    """Cross-entropy against the gold labels (1 = positive word)."""
    return F.cross_entropy(logits, label_targets(labels).to(logits.device))


def gold_log_prob(logits: torch.Tensor, labels: pd.Series | np.ndarray) -> torch.Tensor:
    """log P(gold label) per row under the 2-way softmax of ``logits``."""
    targets = label_targets(labels).to(logits.device)
    return F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the tempered 2-way softmaxes, times T^2 (Hinton's scaling keeps the
    gradient size independent of T); mean over rows."""
    log_student = F.log_softmax(student / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.to(student.device) / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2
