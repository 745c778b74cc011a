"""sentence-transformers backend: any SentenceTransformer from a hub id or a folder, computed as `encode` does."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config.schema import TextModelSpec
from ..device import forward_context
from ..model_store import locate
from .base import Layer, filled_rows
from .pooling import pool, to_numpy
from .text_common import count_truncated, padded_width

log = logging.getLogger("ducho")

SENTENCE = "sentence_embedding"
TOKENS = "token_embeddings"
TOKEN_MODULES = ("Transformer", "Pooling", "Normalize")  # no matmul with one row per text


def parse_layers(spec: TextModelSpec) -> tuple[Layer, ...]:
    """`sentence_embedding` (default) or `token_embeddings`; any other name (the reference demos wrote `1`
    or `out`) names the output folder of the sentence embedding."""
    layers = []
    for folder in spec.output_layers or [SENTENCE]:
        if folder == TOKENS:
            layers.append(Layer(folder, TOKENS, spec.pooling or "none"))
        else:
            if folder != SENTENCE:
                log.info("output_layers %r -> sentence_embedding (folder keeps the name %r)", folder, folder)
            layers.append(Layer(folder, SENTENCE))
    return tuple(layers)


class SentenceTransformersText:
    """A SentenceTransformer; `prepare` is its `preprocess`, `forward` its module chain, as in `encode`."""

    loader = None  # texts are tokenised per batch in `prepare`

    def __init__(self, spec: TextModelSpec, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.device = device
        self.location = locate(spec.model_name, spec.revision)
        self.model = SentenceTransformer(str(self.location.target), device=device, revision=self.location.revision,
                                         trust_remote_code=spec.trust_remote_code)
        if spec.max_length:
            self.model.max_seq_length = spec.max_length
        self.model.eval()
        self.layers = parse_layers(spec)
        self.limit = int(self.model.max_seq_length)
        self.truncated = 0
        per_record = any(layer.name == SENTENCE for layer in self.layers) and any(
            type(module).__name__ not in TOKEN_MODULES for module in self.model)  # e.g. Dense: base.MIN_ROWS
        self.batch_rows = filled_rows(spec.batch_size) if per_record else None

    def sort_key(self, payload: str) -> int:
        return padded_width(self.model.tokenizer, [payload], self.limit)

    def prepare(self, texts: Sequence[str]) -> dict[str, Any]:
        width = padded_width(self.model.tokenizer, texts, self.limit)
        features = self.model.preprocess(list(texts), processing_kwargs={
            "text": {"padding": "max_length", "max_length": width}})
        lengths = features["attention_mask"].sum(dim=1).tolist()
        return {"inputs": features, "truncated": count_truncated(self.model.tokenizer, texts, lengths, self.limit)}

    def forward(self, batch: dict[str, Any]) -> dict[str, Sequence[np.ndarray]]:
        self.truncated += batch["truncated"]
        features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch["inputs"].items()}
        with forward_context(self.device, self.spec.precision):
            out = self.model(features)
        result: dict[str, Sequence[np.ndarray]] = {}
        for layer in self.layers:
            if layer.name == TOKENS:
                result[layer.folder] = to_numpy(pool(out[TOKENS], out["attention_mask"], layer.pooling))
            else:
                result[layer.folder] = to_numpy(out[SENTENCE])
        return result

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.location.describe(),
            "modules": [type(m).__name__ for m in self.model],
            "max_length": self.limit,
            "truncated_texts": self.truncated,
        }
