from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

from core.ml.data import decode_history
from core.ml.model import (
    LoraSpec,
    ModelError,
    adapter_sha256,
    base_state,
    label_token_ids,
    load_adapter,
    load_base,
    new_adapter,
    save_adapter,
)
from core.ml.prompts import Catalog, PromptBuilder
from core.ml.recommender import popular_unseen, recommend, user_history
from core.ml.scoring import Scorer, cache_keyword


def _randomise_lora(model, name: str, seed: int = 1) -> None:
    # a fresh LoRA has B = 0 (a no-op); give it weights so that adapters differ measurably
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.named_parameters():
            if "lora_B" in key and f".{name}." in key:
                value.copy_(torch.randn(value.shape, generator=generator) * 0.5)


def test_tiny_model_is_small_and_frozen(tiny_model) -> None:
    n = sum(p.numel() for p in tiny_model.model.parameters())
    assert n < 5_000_000
    assert not any(p.requires_grad for p in tiny_model.model.parameters())


def test_label_words_come_from_the_tokenizer(tiny_model) -> None:
    yes, no = tiny_model.label_ids
    assert tiny_model.tokenizer.decode([yes]) == "Yes" and tiny_model.tokenizer.decode([no]) == "No"
    with pytest.raises(ModelError, match="need 1"):
        label_token_ids(tiny_model.tokenizer, ("Absolutely certainly", "No"))


def test_prompt_has_profile_history_and_target(small_data, tiny_model) -> None:
    builder = PromptBuilder(tiny_model.tokenizer, Catalog.from_frames(small_data.items, small_data.users))
    prefix, suffix = builder.parts("u1", [("i2", 4.0), ("i3", 1.0)], "i5")
    assert "30-year-old woman working as writer" in prefix
    assert prefix.index('"Movie 2" (4 stars)') < prefix.index('"Movie 3" (1 stars)')
    assert suffix.startswith("Movie 5") and "Movie 5" not in prefix
    assert suffix.endswith("<|im_start|>assistant\n")


def test_padded_batch_scores_equal_single_scores(tiny_scorer, small_data) -> None:
    new_adapter(tiny_scorer.loaded, LoraSpec(), "a", seed=0)
    _randomise_lora(tiny_scorer.loaded.model, "a")
    frame = small_data.split("train").head(6)
    batch = tiny_scorer.score(frame)
    single = np.array([tiny_scorer.score(frame.iloc[[k]])[0] for k in range(len(frame))])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_prefix_shared_ranking_equals_plain_scoring(tiny_scorer, small_data) -> None:
    new_adapter(tiny_scorer.loaded, LoraSpec(), "a", seed=0)
    _randomise_lora(tiny_scorer.loaded.model, "a")
    history = decode_history(small_data.samples.history.iloc[-1])
    candidates = [f"i{k}" for k in range(20)]
    shared = tiny_scorer.rank("u3", history, candidates, share_prefix=True)
    plain = tiny_scorer.rank("u3", history, candidates, share_prefix=False)
    np.testing.assert_allclose(shared, plain, atol=1e-5)
    assert shared.std() > 0  # the adapter makes candidates differ


def test_ranking_chunks_group_suffixes_of_like_length(tiny_scorer) -> None:
    """Candidate rows are chunked in order of suffix length: a chunk pads only to its own longest suffix.
    Here short and long titles alternate; in request order every chunk of 4 padded to the long ones."""
    loaded = tiny_scorer.loaded
    new_adapter(loaded, LoraSpec(), "a", seed=0)
    titles = {
        f"i{k}": ("Up" if k % 2 else "The Good, the Bad and the Ugly: Extended Edition") for k in range(8)
    }
    scorer = Scorer(loaded, PromptBuilder(loaded.tokenizer, Catalog(titles, {})), rank_batch_size=4)
    widths: list[tuple[int, int]] = []
    base = loaded.model.get_base_model() if isinstance(loaded.model, PeftModel) else loaded.model
    decoder = getattr(base, base.base_model_prefix)
    hook = decoder.register_forward_pre_hook(
        lambda _module, _args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        scores = scorer.rank("u1", [], list(titles))
    finally:
        hook.remove()
    work = scorer.encode_ranking(scorer.builder, "u1", [], list(titles))
    suffix_chunks = widths[1:]  # the first forward pass is the prefix's
    assert [rows for rows, _ in suffix_chunks] == [4, 4]
    assert sum(rows * width for rows, width in suffix_chunks) == sum(len(s) for s in work.suffixes)
    plain = scorer.rank("u1", [], list(titles), share_prefix=False)
    np.testing.assert_allclose(scores, plain, atol=1e-5)  # each answer still lands on its own candidate


def test_cache_keyword_follows_the_installed_transformers_signature(tiny_model) -> None:
    """transformers 5.17 (the GPU image) names the KV-cache argument ``past_key_values``, 5.24+ ``cache``;
    ``rank`` must pass the one the decoder declares, or 5.17 drops it silently into ``**kwargs``."""

    class Before524:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None, **kwargs): ...

    class From524:
        def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs): ...

    assert cache_keyword(Before524()) == "past_key_values"
    assert cache_keyword(From524()) == "cache"
    base = tiny_model.model.get_base_model() if isinstance(tiny_model.model, PeftModel) else tiny_model.model
    decoder = getattr(base, base.base_model_prefix)
    assert cache_keyword(decoder) in inspect.signature(decoder.forward).parameters


def test_adapter_save_load_round_trip_gives_identical_scores(tiny_config, small_data, tmp_path: Path) -> None:
    first = load_base(tiny_config)
    new_adapter(first, LoraSpec(), "v1", seed=0)
    _randomise_lora(first.model, "v1")
    catalog = Catalog.from_frames(small_data.items, small_data.users)
    frame = small_data.split("train").head(8)
    before = Scorer(first, PromptBuilder(first.tokenizer, catalog)).score(frame)
    sha = save_adapter(first, "v1", tmp_path / "v1", {"note": "test"})
    assert sha == adapter_sha256(tmp_path / "v1")
    assert (tmp_path / "v1" / "adapter_model.safetensors").exists()

    second = load_base(tiny_config)
    load_adapter(second, tmp_path / "v1", "served")
    after = Scorer(second, PromptBuilder(second.tokenizer, catalog)).score(frame)
    np.testing.assert_array_equal(before, after)


def test_switching_adapters_changes_scores_and_keeps_base(tiny_scorer, small_data, tmp_path: Path) -> None:
    loaded = tiny_scorer.loaded
    new_adapter(loaded, LoraSpec(), "a", seed=0)
    _randomise_lora(loaded.model, "a", seed=1)
    save_adapter(loaded, "a", tmp_path / "a")
    frozen = base_state(loaded.model)
    new_adapter(loaded, LoraSpec(), "b", seed=0)
    _randomise_lora(loaded.model, "b", seed=2)
    frame = small_data.split("train").head(4)
    score_b = tiny_scorer.score(frame)
    loaded.model.set_adapter("a")
    score_a = tiny_scorer.score(frame)
    assert not np.allclose(score_a, score_b)
    for key, value in base_state(loaded.model).items():
        assert torch.equal(value, frozen[key])
    with pytest.raises(ModelError, match="already loaded"):
        load_adapter(loaded, tmp_path / "a", "a")


def test_recommend_ranks_unseen_popular_items(tiny_scorer, small_data) -> None:
    new_adapter(tiny_scorer.loaded, LoraSpec(), "a", seed=0)
    samples = small_data.samples
    candidates = popular_unseen(samples, "u0", 50)
    assert not set(candidates) & set(samples.loc[samples.user_id == "u0", "item_id"])
    recs = recommend(tiny_scorer, "u0", user_history(samples, "u0", 3), candidates, k=3)
    assert len(recs) == 3 and recs[0].score >= recs[1].score >= recs[2].score
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        recommend(tiny_scorer, "u0", [], candidates, k=0)
