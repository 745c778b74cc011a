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


class Extractor(Protocol):
    """Built once per model; `prepare` runs off the main thread, `forward` gives every layer in one pass."""

    layers: tuple[Layer, ...]
    loader: Callable[[Any], Any] | None
    """Per record, in worker processes: decode and preprocess a payload (a file path); None for texts."""

    def prepare(self, payloads: Sequence[Any]) -> Any:
        """Turn payloads (texts) or loaded records (preprocessed images...) into a model-ready batch."""

    def forward(self, batch: Any) -> dict[str, Sequence[np.ndarray]]:
        """Return, per layer folder, one float32 array per record with the feature's own shape."""

    def describe(self) -> dict[str, Any]:
        """Facts for the manifest: model id, where it was loaded from, revision or file hashes, preprocessing."""

    def sort_key(self, payload: Any) -> int:
        """A cheap size of a payload; batches are formed from payloads of similar size."""


class FittedExtractor(Extractor, Protocol):
    """An extractor fitted on the corpus before extracting (e.g. TF-IDF): `fit` sees every payload to extract, in
    order; `artifacts` (e.g. the vocabulary) are written into every layer folder so new data maps the same way."""

    def fit(self, payloads: Iterator[Any]) -> None:
        """Learn from the payloads of the whole source (called once, before any extraction)."""

    def artifacts(self) -> dict[str, bytes]:
        """File name -> content, written atomically beside the features."""
