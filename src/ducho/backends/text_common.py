"""What the text backends share: tokenizer limits and the truncation count."""

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
