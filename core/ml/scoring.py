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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RankWork:
    """One user's ranking as token ids: the prompt prefix (profile and history) and one suffix per
    candidate (its title and the rest of the template); the prompt of candidate j is prefix + suffixes[j]."""

    prefix: tuple[int, ...]
    suffixes: tuple[tuple[int, ...], ...]

    @property
    def tokens(self) -> int:
        """Tokens a prefix-shared forward pass reads for this work."""
        return len(self.prefix) + sum(len(s) for s in self.suffixes)


class Scorer:
    """Tokenizes prompts (caching user prefixes) and scores samples with the active adapter."""

    def __init__(
        self, loaded: LoadedModel, builder: PromptBuilder, batch_size: int = 16, rank_batch_size: int = 32
    ) -> None:
        self.loaded = loaded
        self.builder = builder
        self.batch_size = batch_size
        # candidate suffixes are short (~16 tokens), so ranking chunks are wider than scoring batches; on
        # one CPU thread a wide chunk pads to a longer suffix and copies the user's prefix cache to every
        # row (`e2u bench ranking --rank-batch-sizes`, docs/benchmarks.md: 32 rows 10.4 s, 64 rows 12.2 s,
        # 128 rows 17.9 s for 100 SmolLM2 candidates).  A GPU may prefer wider chunks (E2U_RANK_BATCH_SIZE).
        self.rank_batch_size = rank_batch_size
        tokenizer = loaded.tokenizer
        # requests tokenize in their own threads (outside the model lock); a fast tokenizer's Rust object
        # is not meant to be entered by two threads at once ("Already borrowed")
        tokenizer_lock = threading.Lock()

        def encode(text: str) -> tuple[int, ...]:
            with tokenizer_lock:
                return tuple(tokenizer.encode(text, add_special_tokens=False))

        self._encode: Callable[[str], tuple[int, ...]] = lru_cache(maxsize=65536)(encode)

    def forget_cached_prompts(self) -> None:
        """Empty the prompt-encoding cache (it holds users' profiles and histories as token ids)."""
        self._encode.cache_clear()  # type: ignore[attr-defined]

    @property
    def pad_id(self) -> int:
        return int(self.loaded.tokenizer.pad_token_id)

    def encode(
        self,
        user_id: str,
        history: Sequence[tuple[str, float]],
        item_id: str,
        builder: PromptBuilder | None = None,
    ) -> list[int]:
        """Token ids of one sample's prompt, rendered by ``builder`` (default: the scorer's own)."""
        prefix, suffix = (builder or self.builder).parts(user_id, history, item_id)
        return list(self._encode(prefix)) + list(self._encode(suffix))

    def encode_frame(self, samples: pd.DataFrame, builder: PromptBuilder | None = None) -> list[list[int]]:
        return [
            self.encode(str(u), decode_history(str(h)), str(i), builder)
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
        return self.margin_encoded(self.encode_frame(samples), progress, desc)

    @torch.no_grad()
    def margin_encoded(
        self, sequences: Sequence[Sequence[int]], progress: bool = False, desc: str = "scoring"
    ) -> torch.Tensor:
        """``margin`` of already tokenized prompts (one per row), in row order."""
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
        if not (share_prefix and self.shares_prefix(self.builder)):
            frame = pd.DataFrame(
                {"user_id": user_id, "item_id": list(candidates), "history": encode_history(history)}
            )
            return self.score(frame)
        return self.rank_encoded([self.encode_ranking(self.builder, user_id, history, candidates)])[0]

    def shares_prefix(self, builder: PromptBuilder) -> bool:
        """Whether ranking can encode the user's prefix once for all candidates: the template ends with
        the target (``PromptTemplate.shares_prefix``) and the base is a causal LM (an encoder reads the
        whole prompt at once)."""
        return builder.template.shares_prefix and not is_seq2seq(self.loaded.model)

    def encode_ranking(
        self,
        builder: PromptBuilder,
        user_id: str,
        history: Sequence[tuple[str, float]],
        candidates: Sequence[str],
    ) -> RankWork:
        """Token ids of one user's prefix and of each candidate's suffix, rendered by ``builder`` (whose
        template must share the prefix); no forward pass, so callers may do it outside any model lock."""
        prefix_text, template = builder.user_prefix_and_template(user_id, history)
        suffixes = tuple(self._encode(builder.catalog.title(item) + template) for item in candidates)
        return RankWork(self._encode(prefix_text), suffixes)

    @torch.no_grad()
    def rank_encoded(self, works: Sequence[RankWork]) -> list[np.ndarray]:
        """P(positive) of each suffix of each ``works`` entry, one array per entry, in one batched pass.

        The prefixes (of different users, lengths and requests) are encoded together, left-padded with
        explicit positions; then the candidate rows of all entries are packed into chunks of
        ``rank_batch_size`` rows (in order of suffix length, so that a chunk pads little), each row attending
        to its own user's cached prefix.  A row's answer
        equals the same row ranked alone within float tolerance."""
        scores = [np.empty(len(w.suffixes)) for w in works]
        rows = [(k, j) for k, w in enumerate(works) for j in range(len(w.suffixes))]
        # chunks of suffixes of like length: a chunk is right-padded to its longest suffix, and titles
        # vary (8 to 30 tokens), so in request order padding added ~70% to the tokens a ranking reads
        rows.sort(key=lambda row: len(works[row[0]].suffixes[row[1]]))
        if not rows:
            return scores
        device = self.loaded.device
        decoder, head = _decoder_and_head(self.loaded.model)
        lengths = torch.tensor([len(w.prefix) for w in works])
        width_p = int(lengths.max())
        prefix_ids = torch.full((len(works), width_p), self.pad_id, dtype=torch.long)
        prefix_mask = torch.zeros((len(works), width_p), dtype=torch.long)
        for k, w in enumerate(works):  # left padding: every prefix ends at the same column
            prefix_ids[k, width_p - len(w.prefix) :] = torch.tensor(w.prefix, dtype=torch.long)
            prefix_mask[k, width_p - len(w.prefix) :] = 1
        prefix_out = decoder(
            input_ids=prefix_ids.to(device),
            attention_mask=prefix_mask.to(device),
            position_ids=((prefix_mask.cumsum(-1) - 1).clamp(min=0)).to(device),
            use_cache=True,
        )
        for start in range(0, len(rows), self.rank_batch_size):
            chunk = rows[start : start + self.rank_batch_size]
            owner = torch.tensor([k for k, _ in chunk])
            suffixes = [works[k].suffixes[j] for k, j in chunk]
            width = max(len(s) for s in suffixes)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width_p + width), dtype=torch.long)
            mask[:, :width_p] = prefix_mask[owner]
            for row, seq in enumerate(suffixes):  # right padding: real tokens never see the pads
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, width_p : width_p + len(seq)] = 1
            positions = lengths[owner].unsqueeze(1) + torch.arange(width)
            cache = copy.deepcopy(prefix_out.past_key_values)  # the output field keeps its old name
            cache.batch_select_indices(owner.to(device))
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
            values = torch.sigmoid(logits[:, 0] - logits[:, 1]).numpy()
            for (k, j), value in zip(chunk, values, strict=True):
                scores[k][j] = value
        return scores
