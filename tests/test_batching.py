"""How a shard is cut into batches so that a record's vector never depends on the records batched with it: texts
padded to a grid of lengths and batched by padded length, short batches filled up to `MIN_ROWS` rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ducho.backends.base import MIN_ROWS, Layer, filled_rows
from ducho.backends.text_common import padded_length
from ducho.ids import RecordKey
from ducho.shards import Batch, batches, extract, prepare
from ducho.sources.base import Record


def records(payloads: list[Any]) -> list[Record]:
    return [Record(RecordKey(f"r{n}"), f"line {n}", payload) for n, payload in enumerate(payloads)]


def test_padded_lengths_are_a_grid_of_at_most_an_eighth_of_padding() -> None:
    assert [padded_length(n, 512) for n in (1, 4, 5, 63, 64, 65, 127, 128, 129, 300, 600)] == \
        [4, 4, 8, 64, 64, 72, 128, 128, 144, 320, 512]
    assert padded_length(76, 77) == 77  # never past the limit (CLIP's 77)
    for n in range(32, 2048):
        assert n <= padded_length(n, 4096) <= n * 9 / 8


def test_batches_hold_one_padded_length_longest_first_and_never_mix_lengths() -> None:
    sizes = [8, 16, 8, 24, 16, 8, 8, 8, 16]
    cut = batches(0, records(sizes), 3, lambda size: size)
    assert [[sizes[i] for i in batch.positions] for batch in cut] == [[24], [16, 16, 16], [8, 8, 8], [8, 8]]
    assert [batch.positions for batch in cut][1:] == [[1, 4, 8], [0, 2, 5], [6, 7]]  # input order within a size
    assert [b.positions for b in batches(0, records(sizes), 4, None)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


class Doubling:
    """A fake model that records the rows of each forward."""

    layers = (Layer("x", "x"),)
    loader = None

    def __init__(self, rows: int | None) -> None:
        self.batch_rows, self.seen = rows, []

    def prepare(self, items: list[float]) -> np.ndarray:
        return np.asarray(items, np.float32)

    def forward(self, batch: np.ndarray) -> dict[str, list[np.ndarray]]:
        self.seen.append(len(batch))
        return {"x": [np.array([2 * v], np.float32) for v in batch]}


def test_a_short_batch_is_filled_up_and_the_fill_dropped() -> None:
    assert filled_rows(32) == MIN_ROWS and filled_rows(3) == 3
    model = Doubling(filled_rows(32))
    batch = Batch(0, records([1.0, 2.0, 3.0]), [0, 1, 2])
    out = extract(model, False, batch, [1.0, 2.0, 3.0], prepare(model, [1.0, 2.0, 3.0]))
    assert model.seen == [MIN_ROWS] and out.positions == [0, 1, 2]
    assert [float(v[0]) for v in out.layers["x"]] == [2.0, 4.0, 6.0]
    unfilled = Doubling(None)
    extract(unfilled, False, batch, [1.0, 2.0, 3.0], prepare(unfilled, [1.0, 2.0, 3.0]))
    assert unfilled.seen == [3]


def test_text_batches_are_filled_only_for_a_layer_of_one_vector_per_text(tiny_bert: Path) -> None:
    """Token layers pooled here have a row per token (at least 4: the grid starts there), the pooler one per text."""
    from ducho.backends.hf_text import TransformersText
    from ducho.config.schema import TextModelSpec

    def rows(layers: list[str]) -> int | None:
        spec = TextModelSpec(model_name=str(tiny_bert), backend="transformers", output_layers=layers, batch_size=32)
        return TransformersText(spec, "cpu").batch_rows

    assert rows(["last_hidden_state", "hidden_states.1"]) is None
    assert rows(["last_hidden_state", "pooler_output"]) == MIN_ROWS
