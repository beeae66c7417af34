"""Scoring: P(positive label) for (user, history, item) samples.

The answer is read at one position, the token after the prompt: only the two label rows of the output
embedding are multiplied (``answer_logits``), never the full 49k-word vocabulary.  Ranking many candidates
for one user encodes the user's prefix once and re-uses its KV cache for every candidate.

An encoder-decoder (T5-style) base reads the prompt with its encoder and answers at its first decoder step
(from ``decoder_start_token_id``); its ranking scores every candidate's whole prompt (no prefix sharing).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from tqdm.auto import tqdm

from core.ml.data import decode_history, encode_history
from core.ml.model import LoadedModel, decoder_output_scale, is_seq2seq
from core.ml.prompts import PromptBuilder


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    base: Any = model.get_base_model() if isinstance(model, PeftModel) else model
    return getattr(base, str(base.base_model_prefix)), base.get_output_embeddings()


def cache_keyword(decoder: Any) -> str:
    """The name of the decoder's KV-cache argument: ``cache`` from transformers 5.24 (``past_key_values``
    deprecated there), ``past_key_values`` before.  Feature-detected rather than pinned, so the code runs on
    the GPU image's transformers 5.17 too; an older decoder would silently swallow ``cache=`` in its
    ``**kwargs`` and score every candidate without the user's prefix."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _label_logits(head: Any, hidden: torch.Tensor, label_ids: tuple[int, int]) -> torch.Tensor:
    index = torch.tensor(label_ids, device=hidden.device)
    weight = head.weight.index_select(0, index)
    logits = hidden @ weight.T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias.index_select(0, index)
    return logits.float()


def answer_logits(
    model: Any, sequences: Sequence[Sequence[int]], label_ids: tuple[int, int], pad_id: int
) -> torch.Tensor:
    """Logits of (positive, negative) at the answer position, shape [B, 2]; differentiable.

    Sequences are left-padded with explicit position ids, so a padded row gives the same result as the
    same row alone (within float tolerance).  An encoder-decoder goes to ``_seq2seq_answer_logits``.
    """
    if is_seq2seq(model):
        return _seq2seq_answer_logits(model, sequences, label_ids, pad_id)
    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    decoder, head = _decoder_and_head(model)
    out = decoder(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=False,
    )
    return _label_logits(head, out.last_hidden_state[:, -1, :], label_ids)


def _seq2seq_answer_logits(
    model: Any, sequences: Sequence[Sequence[int]], label_ids: tuple[int, int], pad_id: int
) -> torch.Tensor:
    """``answer_logits`` of an encoder-decoder: the prompts (right-padded, masked) go to the encoder; the
    answer is the first decoder step's, from ``decoder_start_token_id`` alone, scaled as the model scales
    its decoder output before the LM head (``decoder_output_scale``).  T5's positions are relative, so
    padding needs no position ids."""
    base: Any = model.get_base_model() if isinstance(model, PeftModel) else model
    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    encoded = base.get_encoder()(input_ids=ids, attention_mask=mask)
    start = torch.full((len(sequences), 1), int(base.config.decoder_start_token_id), device=device)
    decoded = base.get_decoder()(
        input_ids=start,
        encoder_hidden_states=encoded.last_hidden_state,
        encoder_attention_mask=mask,
        use_cache=False,
    )
    hidden = decoded.last_hidden_state[:, 0, :] * decoder_output_scale(base.config)
    return _label_logits(base.get_output_embeddings(), hidden, label_ids)


class Scorer:
    """Tokenizes prompts (caching user prefixes) and scores samples with the active adapter."""

    def __init__(
        self, loaded: LoadedModel, builder: PromptBuilder, batch_size: int = 16, rank_batch_size: int = 64
    ) -> None:
        self.loaded = loaded
        self.builder = builder
        self.batch_size = batch_size
        # candidate suffixes are short (~20 tokens), so ranking batches can be much wider
        self.rank_batch_size = rank_batch_size
        tokenizer = loaded.tokenizer
        self._encode: Callable[[str], tuple[int, ...]] = lru_cache(maxsize=65536)(
            lambda text: tuple(tokenizer.encode(text, add_special_tokens=False))
        )

    def forget_cached_prompts(self) -> None:
        """Empty the prompt-encoding cache (it holds users' profiles and histories as token ids)."""
        self._encode.cache_clear()  # type: ignore[attr-defined]

    @property
    def pad_id(self) -> int:
        return int(self.loaded.tokenizer.pad_token_id)

    def encode(self, user_id: str, history: Sequence[tuple[str, float]], item_id: str) -> list[int]:
        prefix, suffix = self.builder.parts(user_id, history, item_id)
        return list(self._encode(prefix)) + list(self._encode(suffix))

    def encode_frame(self, samples: pd.DataFrame) -> list[list[int]]:
        return [
            self.encode(str(u), decode_history(str(h)), str(i))
            for u, h, i in zip(samples["user_id"], samples["history"], samples["item_id"], strict=True)
        ]

    def logits(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        return answer_logits(self.loaded.model, sequences, self.loaded.label_ids, self.pad_id)

    @torch.no_grad()
    def score(self, samples: pd.DataFrame, progress: bool = False, desc: str = "scoring") -> np.ndarray:
        """P(positive) for each sample row (columns user_id, item_id, history), in row order."""
        return torch.sigmoid(self.margin(samples, progress, desc)).numpy()

    @torch.no_grad()
    def margin(self, samples: pd.DataFrame, progress: bool = False, desc: str = "scoring") -> torch.Tensor:
        """logit(yes) - logit(no) per row, float32 on CPU; sigmoid of it is P(yes)."""
        sequences = self.encode_frame(samples)
        # sort by length so batches pad little; restore order at the end
        order = sorted(range(len(sequences)), key=lambda k: len(sequences[k]))
        out = torch.empty(len(sequences))
        bar = tqdm(total=len(sequences), desc=desc, disable=not progress, unit="sample")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            logits = self.logits([sequences[k] for k in chunk]).cpu()
            out[chunk] = logits[:, 0] - logits[:, 1]
            bar.update(len(chunk))
        bar.close()
        return out

    @torch.no_grad()
    def rank(
        self,
        user_id: str,
        history: Sequence[tuple[str, float]],
        candidates: Sequence[str],
        share_prefix: bool = True,
    ) -> np.ndarray:
        """P(positive) of each candidate item for one user; with ``share_prefix`` the user's prompt prefix is
        encoded once and its KV cache re-used for all candidates (only when the template allows it:
        ``PromptTemplate.shares_prefix``, and only on a causal LM: an encoder reads the whole prompt at
        once, so an encoder-decoder base gets plain scoring)."""
        if not candidates:
            return np.zeros(0)
        sharing = share_prefix and self.builder.template.shares_prefix
        if not (sharing and not is_seq2seq(self.loaded.model)):
            frame = pd.DataFrame(
                {"user_id": user_id, "item_id": list(candidates), "history": encode_history(history)}
            )
            return self.score(frame)
        model = self.loaded.model
        device = self.loaded.device
        prefix_text, template = self.builder.user_prefix_and_template(user_id, history)
        prefix = list(self._encode(prefix_text))
        decoder, head = _decoder_and_head(model)
        prefix_ids = torch.tensor([prefix], device=device)
        prefix_out = decoder(input_ids=prefix_ids, use_cache=True)
        scores = np.empty(len(candidates))
        for start in range(0, len(candidates), self.rank_batch_size):
            chunk = candidates[start : start + self.rank_batch_size]
            suffixes = [list(self._encode(self.builder.catalog.title(item) + template)) for item in chunk]
            width = max(len(s) for s in suffixes)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), len(prefix) + width), dtype=torch.long)
            mask[:, : len(prefix)] = 1
            for row, seq in enumerate(suffixes):  # right padding: real tokens never see the pads
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, len(prefix) : len(prefix) + len(seq)] = 1
            positions = torch.arange(len(prefix), len(prefix) + width).expand(len(chunk), -1)
            cache = copy.deepcopy(prefix_out.past_key_values)  # the output field keeps its old name
            cache.batch_repeat_interleave(len(chunk))
            out = decoder(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=True,
                **{cache_keyword(decoder): cache},
            )
            last = torch.tensor([len(s) - 1 for s in suffixes], device=device)
            hidden = out.last_hidden_state[torch.arange(len(chunk), device=device), last]
            logits = _label_logits(head, hidden, self.loaded.label_ids).cpu()
            scores[start : start + len(chunk)] = torch.sigmoid(logits[:, 0] - logits[:, 1]).numpy()
        return scores
