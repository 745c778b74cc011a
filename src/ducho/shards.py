"""One shard of a job, the same for every executor: the source's records in input order are cut into shards of SHARD
records (the unit of work and of resume, fixed by the record list, not by the number of workers); a shard's records
are sorted by size and cut into batches; each batch is decoded, run through the model in one forward (a failing
batch again record by record) and checked. The local executor (`runner`) and the Ray executor (`ray_executor`) both
call these functions, so both give the same batches and so the same vectors."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends.base import Extractor
from .errors import RunAbort
from .ids import RecordKey
from .loading import Failed, load_one, reason_of
from .sources import Source
from .sources.base import Record, Skip
from .streams import chunked

SHARD = 2048  # records per shard; fixed so that a resumed run (or another executor) batches exactly as the first


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one shard extracted together, with their positions in the shard."""

    shard: int
    records: list[Record]
    positions: list[int]

    @property
    def payloads(self) -> list[Any]:
        return [record.payload for record in self.records]


@dataclass
class Extracted:
    """What one batch gave: per layer folder, one array per kept record (positions and keys aligned), and the records
    skipped (decoding failed, the model failed on the record alone, non-finite values)."""

    shard: int
    positions: list[int] = field(default_factory=list)
    keys: list[RecordKey] = field(default_factory=list)
    layers: dict[str, list[np.ndarray]] = field(default_factory=dict)
    skips: list[Skip] = field(default_factory=list)

    def extend(self, other: Extracted) -> None:
        self.positions += other.positions
        self.keys += other.keys
        for folder, arrays in other.layers.items():
            self.layers.setdefault(folder, []).extend(arrays)
        self.skips += other.skips


def shard_records(source: Source, scan: Any, spec: Any) -> Iterator[tuple[int, list[Record], list[Skip]]]:
    """(shard index, its records, the skips read before its last record), in input order; trailing skips come with
    index -1 and no records."""
    skipped: list[Skip] = []

    def records() -> Iterator[Record]:
        for entry in source.records(scan, spec):
            if isinstance(entry, Skip):
                skipped.append(entry)
            else:
                yield entry

    for index, chunk in enumerate(chunked(records(), SHARD)):
        skips = skipped[:]
        skipped.clear()
        yield index, chunk, skips
    if skipped:
        yield -1, [], skipped


def batches(shard: int, records: list[Record], batch_size: int, sort_key: Callable[[Any], int] | None,
            positions: list[int] | None = None) -> list[Batch]:
    """The shard's batches (of the records at `positions`, default all): records sorted by size, longest first
    (stable, so equal sizes keep input order), cut every `batch_size` and where the size changes (a size is what a
    record is padded to, so a record's padding never depends on its neighbours). Without a sort key (decoding
    started before the model was built; models whose inputs have one shape) input order."""
    order = list(range(len(records))) if positions is None else list(positions)
    if sort_key is None:
        return [Batch(shard, [records[i] for i in order[s:s + batch_size]], order[s:s + batch_size])
                for s in range(0, len(order), batch_size)]
    sizes = {i: sort_key(records[i].payload) for i in order}
    order.sort(key=lambda i: -sizes[i])
    groups = [list(group) for _, group in itertools.groupby(order, key=sizes.__getitem__)]
    return [Batch(shard, [records[i] for i in group[s:s + batch_size]], group[s:s + batch_size])
            for group in groups for s in range(0, len(group), batch_size)]


def decode(loader: Callable[[Any], Any] | None, batch: Batch) -> list[Any]:
    """Load every payload of the batch in this process (a failure is the record's `Failed`); texts need none."""
    if loader is None:
        return batch.payloads
    return [load_one(loader, payload) for payload in batch.payloads]


def loaded(batch: Batch, items: list[Any]) -> tuple[Batch, list[Any], list[Skip]]:
    """The batch cut to the records that decoded, their items, and a skip for each that did not."""
    skips = [Skip(r.key.label, r.origin, item.reason) for r, item in zip(batch.records, items)
             if isinstance(item, Failed)]
    good = [n for n, item in enumerate(items) if not isinstance(item, Failed)]
    return Batch(batch.shard, [batch.records[n] for n in good], [batch.positions[n] for n in good]), \
        [items[n] for n in good], skips


def prepare(extractor: Extractor, items: list[Any]) -> Any:
    """The model-ready batch, or the error (then each record is tried alone). For a model with `batch_rows`, the
    items are filled up to that many rows with copies of the last one (the forward's extra outputs are dropped)."""
    fill = max(0, (getattr(extractor, "batch_rows", None) or 0) - len(items)) if items else 0
    try:
        prepared = extractor.prepare(items + items[-1:] * fill)
        if fill and isinstance(prepared, dict) and prepared.get("truncated"):  # a text's copies are not cut texts
            prepared["truncated"] -= fill * extractor.prepare(items[-1:])["truncated"]
        return prepared
    except Exception as error:
        return error


def extract(extractor: Extractor, normalize: bool, batch: Batch, items: list[Any], prepared: Any) -> Extracted:
    """One forward for the batch; on an error each record is retried alone, so one bad record costs only itself."""
    result = Extracted(batch.shard)
    outputs = _forward(extractor, prepared)
    if isinstance(outputs, Exception):
        if len(batch.records) == 1:
            record = batch.records[0]
            result.skips.append(Skip(record.key.label, record.origin, reason_of(outputs)))
            return result
        for record, position, item in zip(batch.records, batch.positions, items):
            result.extend(extract(extractor, normalize, Batch(batch.shard, [record], [position]), [item],
                                  prepare(extractor, [item])))
        return result
    outputs = {folder: arrays[:len(batch.records)] for folder, arrays in outputs.items()}  # without the fill rows
    keep = []
    for i, record in enumerate(batch.records):
        bad = next((folder for folder, arrays in outputs.items() if not np.isfinite(arrays[i]).all()), None)
        if bad is None:
            keep.append(i)
        else:
            result.skips.append(Skip(record.key.label, record.origin, f"non-finite values in layer {bad}"))
    result.positions = [batch.positions[i] for i in keep]
    result.keys = [batch.records[i].key for i in keep]
    result.layers = {folder: [_normalized(arrays[i]) if normalize else arrays[i] for i in keep]
                     for folder, arrays in outputs.items()}
    return result


def _forward(extractor: Extractor, prepared: Any) -> Any:
    if isinstance(prepared, Exception):
        return prepared
    try:
        return extractor.forward(prepared)
    except RunAbort:  # the whole run's problem (e.g. an exported graph that disagrees with torch), not the batch's
        raise
    except Exception as error:
        return error


def _normalized(array: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / np.maximum(norm, 1e-12)).astype(np.float32)
