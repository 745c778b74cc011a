"""`format: parquet`: one `shards/part-NNNNN.parquet` per shard of records (the resume unit), never joined; the
`shards` folder holds nothing else, so any Parquet reader reads it whole (the layer folder also holds the manifest).

Columns: `id` (items) or `user` and `item` (interactions), strings, and `vector`, a fixed-size list of float32 (or
float16, `dtype: float16`): the record's feature flattened row-major, its shape in the schema metadata (`ducho.shape`,
JSON). Rows follow the input order within a part, and parts follow it by their number. `vector_table` and
`write_part` build and write a part (`ducho export --to parquet` writes its shards with them).

Compression zstd: float vectors barely compress, yet zstd takes ~7% off dense embeddings (snappy nothing) and ~15%
more than snappy off ReLU maps, at the same speed; pyarrow, pandas, Hugging Face datasets, Spark, DuckDB and Polars
read it. A part also names the settings fingerprint and the input it was made from: a part of another input (its
shards hold other records) is redone, and `finish` removes those the new input no longer reaches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DuchoError
from .ids import RecordKey
from .writers import PARQUET_PART, PARQUET_SHARDS, LayerWriter, atomic_write, cast, part_name, remove_temporaries

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as error:  # pragma: no cover - pyarrow is not a base dependency (extras ray, dev)
    raise DuchoError("format parquet needs pyarrow: pip install pyarrow") from error

COMPRESSION = "zstd"
SHAPE, LAYER, FINGERPRINT, INPUT = b"ducho.shape", b"ducho.layer", b"ducho.fingerprint", b"ducho.input_sha256"


def vector_table(ids: dict[str, Sequence[str]], matrix: np.ndarray, metadata: dict[bytes, bytes]) -> pa.Table:
    """String columns `ids` (name -> values) and `vector`, a fixed-size list of the matrix's float type holding each
    (n, width) row; `metadata` goes to the schema."""
    width = int(matrix.shape[1])
    fields = [pa.field(name, pa.string(), nullable=False) for name in ids]
    fields.append(pa.field("vector", pa.list_(pa.from_numpy_dtype(matrix.dtype), width), nullable=False))
    columns = [pa.array(values, pa.string()) for values in ids.values()]
    columns.append(pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix).reshape(-1)), width))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=metadata))


def write_part(path: Path, table: pa.Table) -> None:
    """One part file, zstd, the id columns dictionary-encoded."""
    atomic_write(path, lambda handle: pq.write_table(table, handle, compression=COMPRESSION,
                                                     use_dictionary=table.column_names[:-1]))


class ParquetWriter(LayerWriter):
    """`<folder>/shards/part-NNNNN.parquet`, one per shard, rows in input order; `finish` leaves the shards be."""

    layout = ("shards/part-NNNNN.parquet per shard of records, in input order: id (interactions: user, item) and "
              "vector (fixed-size list of float32 or float16, the feature flattened; its shape in the metadata "
              "ducho.shape)")

    def __init__(self, folder: Path, fingerprint: str, input_sha256: str, overwrite: bool,
                 interactions: bool, dtype: str = "float32", previous: Any = None) -> None:
        super().__init__(folder, fingerprint, input_sha256, overwrite, interactions, dtype, previous)
        self.shards = folder / PARQUET_SHARDS
        self.shards.mkdir(exist_ok=True)
        remove_temporaries(self.shards)
        self.stamp = {FINGERPRINT: fingerprint.encode(), INPUT: input_sha256.encode()}
        self.id_columns = ["user", "item"] if interactions else ["id"]
        self.done = {shard: rows for shard, (rows, _) in self._parts().items()}  # shards written by earlier runs
        self.complete = self.complete and sum(self.done.values()) >= self.previous_count  # none deleted since

    def is_done(self, chunk: int, keys: Sequence[RecordKey]) -> bool:
        return self.complete or chunk in self.done

    def write(self, chunk: int, positions: Sequence[int], keys: Sequence[RecordKey],
              arrays: Sequence[np.ndarray]) -> None:
        if self.complete or chunk in self.done:  # redone for another layer's lost files: this one's part is there
            return
        self.hold("parquet", chunk, positions, keys, arrays)

    def end_chunk(self, chunk: int, size: int) -> None:
        """Write the shard's records, in input order, as one part (nothing when every record failed)."""
        keys, arrays = self.take(chunk)
        if not keys:
            return
        shape = tuple(arrays[0].shape)
        width = int(np.prod(shape))
        if width == 0:
            raise DuchoError(f"{self.folder}: format parquet cannot store empty features (shape {shape})")
        matrix = cast(np.stack(arrays), self.dtype, self.folder).reshape(len(arrays), width)
        ids = {"user": [key.user for key in keys], "item": [key.item for key in keys]} if self.interactions \
            else {"id": [key.item for key in keys]}
        metadata = {SHAPE: json.dumps(list(shape)).encode(), LAYER: self.folder.name.encode(), **self.stamp}
        write_part(self.shards / part_name(chunk), vector_table(ids, matrix, metadata))
        self.written += len(keys)

    def finish(self) -> int:
        """The rows of every part of this output (read from the footers); parts of another input are removed."""
        parts = self._parts(remove_others=True)
        shapes = {shape for _, shape in parts.values()}
        if len(shapes) > 1:
            raise DuchoError(f"{self.folder}: parts hold features of different shapes {sorted(shapes)}; format "
                             "parquet needs one shape per record (use pooling or format: npy)")
        if shapes and self.shape is None:
            self.shape = tuple(json.loads(shapes.pop()))
        return sum(rows for rows, _ in parts.values())

    def describe(self) -> dict[str, Any]:
        """The shards (file names in input order), their rows, columns and the vector's shape, for the manifest."""
        parts = self._parts()
        shape = list(self.shape) if self.shape is not None else \
            json.loads(next(iter(parts.values()))[1]) if parts else []
        return {"shards": [f"{PARQUET_SHARDS}/{part_name(shard)}" for shard in parts],
                "rows": sum(rows for rows, _ in parts.values()),
                "columns": [*self.id_columns, "vector"], "vector_shape": shape, "compression": COMPRESSION}

    def _parts(self, remove_others: bool = False) -> dict[int, tuple[int, str]]:
        """Shard -> (rows, shape JSON) of the parts made with these settings from this input, in shard order."""
        found = {}
        for path in self.shards.iterdir():
            match = PARQUET_PART.fullmatch(path.name)
            if not match:
                continue
            try:
                footer = pq.read_metadata(path)
                metadata = footer.metadata or {}
            except (OSError, pa.ArrowException):  # damaged, or not Parquet: redone like a part of another input
                metadata = {}
            if all(metadata.get(key) == value for key, value in self.stamp.items()):
                found[int(match["index"])] = (footer.num_rows, metadata[SHAPE].decode())
            elif remove_others:
                path.unlink()
        return dict(sorted(found.items()))
