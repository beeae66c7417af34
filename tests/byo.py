"""Test helper: an adapter trained elsewhere, the way a customer would with plain PEFT (``get_peft_model``,
a few optimizer steps on their own prompts, ``save_pretrained``), not with this project's trainer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.ml.model import TINY, ModelConfig, load_base
from tests.conftest import MODELS_DIR

TINY_BASE = MODELS_DIR / "tiny-llama"  # the folder the service's "tiny" base loads from

TEXTS = (
    "Shopper clicked: Movie 2, Movie 4. Will they click Movie 6? Answer: Yes",
    "Shopper clicked: Movie 2, Movie 4. Will they click Movie 7? Answer: No",
)


def train_plain_peft(
    out: Path,
    base: Path = TINY_BASE,
    rank: int = 4,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    steps: int = 3,
    seed: int = 0,
) -> Path:
    """Fine-tune a LoRA on ``base`` for ``steps`` language-modelling steps and save it into ``out``."""
    if base == TINY_BASE and not base.exists():  # a fresh clone: the service's loader builds it once
        load_base(ModelConfig(base=TINY, cache_dir=str(MODELS_DIR), device="cpu"))
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    batch = tokenizer(list(TEXTS), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out)
    return out
