"""Slow checks on the real backbone (SmolLM2-135M-Instruct on CPU): `python -m pytest -m slow`."""

from __future__ import annotations

import numpy as np
import pytest

from core.ml.data import load_movielens, prepare
from core.ml.model import SMOLLM2, LoraSpec, ModelConfig, load_base, new_adapter
from core.ml.recommender import popular_unseen, user_history
from core.ml.workflows import scorer_for
from tests.conftest import MODELS_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():  # type: ignore[no-untyped-def]
    return load_base(ModelConfig(base=SMOLLM2, cache_dir=str(MODELS_DIR), device="cpu"))


def test_converted_smollm2_is_the_real_model(smollm2) -> None:  # type: ignore[no-untyped-def]
    assert smollm2.model.config.num_hidden_layers == 30 and smollm2.model.config.hidden_size == 576
    assert smollm2.tokenizer.eos_token == "<|im_end|>" and smollm2.tokenizer.eos_token_id == 2
    prompt = smollm2.tokenizer("The capital of France is", return_tensors="pt")
    out = smollm2.model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert "Paris" in smollm2.tokenizer.decode(out[0])


def test_prefix_shared_ranking_matches_plain_on_smollm2(smollm2) -> None:  # type: ignore[no-untyped-def]
    data = prepare(load_movielens())
    new_adapter(smollm2, LoraSpec(), "slow", seed=0)
    scorer = scorer_for(smollm2, data)
    history = user_history(data.samples, "1", data.config.history_len)
    items = popular_unseen(data.samples, "1", 12)
    shared = scorer.rank("1", history, items, share_prefix=True)
    plain = scorer.rank("1", history, items, share_prefix=False)
    np.testing.assert_allclose(shared, plain, atol=1e-4)
