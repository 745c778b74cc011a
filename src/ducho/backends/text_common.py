"""What the text backends share: tokenizer limits, the truncation count and the padded length."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

VERY_LARGE = 10**6  # tokenizers without a limit report about 1e30


def token_limit(tokenizer: Any, config: Any, requested: int | None) -> int:
    """The user's `max_length`, else the tokenizer's, else the model's position limit."""
    if requested:
        return requested
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < VERY_LARGE:
        return int(limit)
    positions = getattr(config, "max_position_embeddings", None)
    return int(positions) if positions else 512


def count_truncated(tokenizer: Any, texts: Sequence[str], lengths: Sequence[int], limit: int) -> int:
    """How many texts were cut at `limit` tokens: only texts that reach the limit are tokenized again."""
    full = [t for t, n in zip(texts, lengths) if n >= limit]
    if not full:
        return 0
    ids = tokenizer(list(full), truncation=False, add_special_tokens=True, verbose=False)["input_ids"]
    return sum(len(i) > limit for i in ids)


PADDING = "to a multiple of 4 tokens below 64 (8 below 128, 16 below 256...), at most max_length"
"""How texts are padded. A batch holds texts of one padded length (their sort key), and a short batch is filled up
to `base.MIN_ROWS` rows, so a text's vector does not depend on the texts batched with it: at a fixed padded length
and from 4 rows up, a transformer gave a row the same bits whatever the other rows and their number (MiniLM and a
tiny BERT on an AVX2 machine; MKL at its AVX2, AVX and SSE4.2 kernels, ATen at its default level; the pooler, one
row per text, changed bits below 4 rows); padding each batch to its longest text did not. The steps grow with the
length so that long texts, which are few, do not end in many short batches. On review-like texts (MiniLM's
tokenizer, benchmarks/_texts.py, batches of 32) this computes 1.08 times the tokens, where padding to the longest
text of a batch computed 1.045 times; a grid of multiples of 8 below 128 computed 1.11 times."""


def padded_length(tokens: int, limit: int) -> int:
    """The length a text of `tokens` tokens (already cut at `limit`) is padded to: past 32 tokens at most 1/8 more."""
    step = max(4, 1 << max(tokens.bit_length() - 4, 0))
    return min(-(-tokens // step) * step, limit)


def padded_width(tokenizer: Any, texts: Sequence[str], limit: int) -> int:
    """The padded length of the longest of `texts` (a Hugging Face tokenizer; special tokens included)."""
    ids = tokenizer(list(texts), truncation=True, max_length=limit, verbose=False)["input_ids"]
    return padded_length(max((len(row) for row in ids), default=1), limit)
