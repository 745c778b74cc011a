"""The protocol every backend implements."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Layer:
    """A requested layer: `folder` is the name as written in the config (the output folder),
    `name` the canonical layer the backend computes, `pooling` how steps are reduced ('n/a' for vectors)."""

    folder: str
    name: str
    pooling: str = "n/a"


MIN_ROWS = 8
"""A matmul with one row per record (a CNN's classifier, a BERT pooler, a projection head) gives a row other bits when
it has fewer than 4 rows (MKL/oneDNN pick other kernels; measured on ResNet-18/50, MobileNetV3 and BERT poolers on an
AVX2 machine, where from 4 rows up a row's bits did not depend on the other rows or their number; an AVX-512 machine
gave 16 and 32 rows different bits). So a short batch is filled up with copies of its last record: image batches to
the batch size (every forward the same rows on any CPU; a shard has one short batch), text batches, which are short
wherever a padded length ends, to 8 rows (filling them to 32 would compute 1.7 times the tokens)."""


def filled_rows(batch_size: int) -> int:
    return min(batch_size, MIN_ROWS)


class Extractor(Protocol):
    """Built once per model; `prepare` runs off the main thread, `forward` gives every layer in one pass."""

    layers: tuple[Layer, ...]
    loader: Callable[[Any], Any] | None
    """Per record, in worker processes: decode and preprocess a payload (a file path); None for texts."""

    batch_rows: int | None
    """A short batch is filled up to this many rows (copies of its last record; their outputs dropped): the batch
    size for image models, `filled_rows(batch_size)` for text models with a layer of one vector per text made by a
    matmul (a pooler, a projection, logits), None where every matmul has a row per token (at least 4 rows: the grid
    of padded lengths starts at 4) or rows are not records (audio windows). So a record computed again in another
    batch (an incremental run, a failing batch's records one by one) gets the bits it had (see MIN_ROWS)."""

    def prepare(self, payloads: Sequence[Any]) -> Any:
        """Turn payloads (texts) or loaded records (preprocessed images...) into a model-ready batch."""

    def forward(self, batch: Any) -> dict[str, Sequence[np.ndarray]]:
        """Return, per layer folder, one float32 array per record with the feature's own shape."""

    def describe(self) -> dict[str, Any]:
        """Facts for the manifest: model id, where it was loaded from, revision or file hashes, preprocessing."""

    def sort_key(self, payload: Any) -> int:
        """The size a payload is padded to (texts: `text_common.padded_length`; 0 where inputs have one shape).
        Batches hold payloads of one size, longest first, so a record's padding never depends on its neighbours."""


class FittedExtractor(Extractor, Protocol):
    """An extractor fitted on the corpus before extracting (e.g. TF-IDF): `fit` sees every payload to extract, in
    order; `artifacts` (e.g. the vocabulary) are written into every layer folder so new data maps the same way."""

    def fit(self, payloads: Iterator[Any]) -> None:
        """Learn from the payloads of the whole source (called once, before any extraction)."""

    def artifacts(self) -> dict[str, bytes]:
        """File name -> content, written atomically beside the features."""
