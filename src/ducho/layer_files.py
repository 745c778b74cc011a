"""Read back what a run wrote: the layer folders under a folder (`find_layers`), and one layer's records in row order
(`open_records`), whatever its format: their keys, and their values either as stored (the run's dtype and shape, for
`ducho export`) or as (n, d) float32 vectors in chunks or by position (for `ducho report`, which so never holds a
whole layer in memory: matrix is memory-mapped and read a chunk at a time, sparse keeps its CSR, parquet is read by
record batch).

Row order: the run's input order for `matrix`, `sparse` and `parquet`; file-name order for `npy` (its files keep no
order). `npy` file names are decoded back to ids (`ids.stem_key`); a name that cannot give its id back (shortened
past 200 bytes, or an ambiguous `<user>__<item>`) has no key: its label is the file name, and `require_keys` names it
to whoever needs every id.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DuchoError
from .ids import RecordKey, stem_key
from .writers import MANIFEST, PARQUET_PART, PARQUET_SHARDS, PARTS, read_manifest

MAX_FLAT = 8192  # a multi-dimensional record up to this size is flattened; larger ones are mean-pooled (C, H, W -> C)


@dataclass
class Layer:
    """One layer folder: its manifest and where it sits."""

    folder: Path
    manifest: dict[str, Any]
    name: str  # the folder relative to the root given, for the report's page

    @property
    def title(self) -> str:
        """`<output folder>: <model> / <layer>`, short enough for a table."""
        settings = self.manifest.get("source_settings") or {}
        output = settings.get("output_path")
        output = output.get("visual") if isinstance(output, dict) else output
        model = str((self.manifest.get("model_settings") or {}).get("model_name") or self.folder.parent.name)
        model = model.rstrip("/").rsplit("/", 1)[-1]
        where = f"{Path(str(output)).name}: " if output else ""
        return f"{where}{model} / {self.manifest.get('layer') or self.folder.name}"

    @property
    def fmt(self) -> str:
        """The manifest's format, else the one its files show."""
        return str(self.manifest.get("format") or _guess_format(self.folder))

    @property
    def interactions(self) -> bool:
        return self.manifest.get("source") == "interactions"

    @property
    def shape(self) -> list[Any]:
        """The manifest's shape of one record (["steps", d] for token matrices of varying length)."""
        return list(self.manifest.get("shape") or [])

    @property
    def modality(self) -> str:
        """visual, textual, audio; a joint model's layers by tower (text -> textual, image -> visual, else fused)."""
        modality = str(self.manifest.get("modality") or "unknown")
        if modality == "visual_textual":
            layer = str(self.manifest.get("layer") or self.folder.name)
            return "textual" if layer.startswith("text") else "visual" if layer.startswith(("image", "vision")) \
                else "fused"
        return modality

    @property
    def model_folder(self) -> Path:
        """The job's output folder (failures.tsv); a joint model's text layers may sit elsewhere than it."""
        return self.folder.parent


def find_layers(roots: Sequence[Path]) -> list[Layer]:
    """Every folder holding a manifest.json at or under `roots` (not descending into them, nor into hidden, `.parts`
    or `shards` folders), sorted by path."""
    found: dict[Path, Layer] = {}
    for root in roots:
        root = Path(root).resolve()
        if not root.is_dir():
            raise DuchoError(f"{root} is not a folder")
        for folder in _walk(root):
            manifest = read_manifest(folder)
            if manifest is not None:
                name = folder.relative_to(root).as_posix() if folder != root else folder.name
                found.setdefault(folder, Layer(folder, manifest, name))
    return [found[key] for key in sorted(found)]


def _walk(folder: Path) -> Iterator[Path]:
    if (folder / MANIFEST).is_file():
        yield folder
        return
    try:
        entries = sorted((e for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(".") and entry.name not in (PARTS, PARQUET_SHARDS):
            yield from _walk(Path(entry.path))


def _guess_format(folder: Path) -> str:
    if (folder / "features.npy").is_file():
        return "matrix"
    if (folder / "features.npz").is_file():
        return "sparse"
    return "parquet" if (folder / PARQUET_SHARDS).is_dir() else "npy"


def as_vectors(batch: np.ndarray) -> np.ndarray:
    """(n, ...) records -> (n, d) float32: vectors as they are, small arrays flattened, larger (C, H, W) maps
    mean-pooled over their positions."""
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim == 2:
        return batch
    if batch.ndim == 1:
        return batch.reshape(-1, 1)
    flat = batch.reshape(len(batch), -1)
    return flat if flat.shape[1] <= MAX_FLAT else batch.reshape(len(batch), batch.shape[1], -1).mean(axis=2)


def _note(shape: Sequence[Any]) -> str:
    """How records of `shape` are made into vectors (empty for vectors)."""
    if shape[:1] == ["steps"]:
        return "token/time matrices mean-pooled over their steps"
    if len(shape) > 1:
        return "flattened" if int(np.prod(shape)) <= MAX_FLAT else "mean-pooled over positions"
    return ""


class Records:
    """A layer's records in row order: `keys` (None where an npy file name gives none), labels (`ids`, `items`,
    `users`), and their values as stored (`record`, `blocks`, `matrix`: the run's dtype and record shape) or as
    (n, d) float32 vectors (`chunks`, `rows`, `dim`; `note` says how records that are not vectors were made so)."""

    def __init__(self, layer: Layer, keys: list[RecordKey | None], record_shape: Sequence[Any]) -> None:
        self.layer, self.keys = layer, keys
        self.note = _note(list(record_shape))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def folder(self) -> Path:
        return self.layer.folder

    @property
    def manifest(self) -> dict[str, Any]:
        return self.layer.manifest

    @property
    def interactions(self) -> bool:
        return self.layer.interactions

    @property
    def shape(self) -> list[Any]:
        return self.layer.shape

    @functools.cached_property
    def stems(self) -> list[str]:
        """The file-name stem of each row's key (how ids are matched, see `row_of`)."""
        return [key.stem for key in self.keys if key is not None]  # npy layers set theirs: their file names

    @functools.cached_property
    def ids(self) -> list[str]:
        """Each row's label: the item id, or user__item."""
        return [self.label(row) for row in range(len(self))]

    @functools.cached_property
    def items(self) -> list[str]:
        return [key.item if key is not None else self.stems[row] for row, key in enumerate(self.keys)]

    @functools.cached_property
    def users(self) -> list[str | None]:
        return [key.user if key is not None else None for key in self.keys]

    def label(self, row: int) -> str:
        key = self.keys[row]
        return key.label if key is not None else self.stems[row]

    @functools.cached_property
    def _rows(self) -> dict[str, int]:
        return {stem: row for row, stem in enumerate(self.stems)}

    def row_of(self, key: RecordKey) -> int | None:
        """The row of `key`, matched by its file-name stem (so a shortened npy name still matches its id)."""
        return self._rows.get(key.stem)

    def require_keys(self) -> list[RecordKey]:
        """Every row's key; an error naming the file names that give none."""
        missing = [self.stems[row] for row, key in enumerate(self.keys) if key is None]
        if missing:
            raise DuchoError(f"{self.folder}: {len(missing)} file name(s) do not give their id back (shortened past "
                             f"200 bytes, or a <user>__<item> pair with '__' inside an id), e.g. {missing[0]}.npy; "
                             "run with format matrix or parquet, which keep the ids as written")
        return [key for key in self.keys if key is not None]

    # as stored

    def record(self, row: int) -> np.ndarray:
        """One record as stored."""
        raise NotImplementedError

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first position, (n, *shape) as stored) in row order, `rows` at a time (npy token matrices of varying
        length mean-pooled over their steps: they stack no other way)."""
        raise NotImplementedError

    def matrix(self) -> np.ndarray:
        """All rows as one array (n, *shape) as stored; an error for token matrices of varying length."""
        if self.shape[:1] == ["steps"]:
            raise DuchoError(f"{self.folder}: its records are token/time matrices of varying length (shape "
                             f"{self.shape}); pool the layer for this export")
        parts = [block for _, block in self.blocks(65536)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)

    # as vectors

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first position, (n, d) float32) in row order."""
        for start, block in self.blocks(rows):
            yield start, as_vectors(block)

    def dim(self) -> int:
        """The vector dimension (from the first record)."""
        for _, block in self.chunks(1):
            return int(block.shape[1])
        return 0

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The vectors at `positions` (any order), read with one streaming pass over the layer."""
        positions = np.asarray(positions, dtype=np.int64)
        out: np.ndarray | None = None
        order = np.argsort(positions, kind="stable")
        wanted = positions[order]
        for start, block in self.chunks(4096):
            lo, hi = np.searchsorted(wanted, [start, start + len(block)])
            if hi > lo:
                if out is None:
                    out = np.empty((len(positions), block.shape[1]), np.float32)
                out[order[lo:hi]] = block[wanted[lo:hi] - start]
        return out if out is not None else np.empty((0, 0), np.float32)


def open_records(layer: Layer) -> Records:
    """The reader for the layer's format (from its manifest, else from its files)."""
    readers: dict[str, type[Records]] = {"npy": NpyRecords, "matrix": MatrixRecords, "sparse": SparseRecords,
                                         "parquet": ParquetRecords}
    reader = readers.get(layer.fmt)
    if reader is None:
        raise DuchoError(f"{layer.folder}: unknown format {layer.fmt!r} in its manifest")
    return reader(layer)  # type: ignore[call-arg]


class NpyRecords(Records):
    """One `<id>.npy` (interactions `<user>__<item>.npy`) per record; as vectors, token/time matrices of varying
    length are mean-pooled over their steps."""

    def __init__(self, layer: Layer) -> None:
        self.paths = sorted(e.path for e in os.scandir(layer.folder) if e.name.endswith(".npy") and e.is_file())
        self.stems = [os.path.basename(path)[:-4] for path in self.paths]
        super().__init__(layer, [stem_key(stem, layer.interactions) for stem in self.stems], layer.shape)
        self.ragged = layer.shape[:1] == ["steps"]

    def record(self, row: int) -> np.ndarray:
        return np.load(self.paths[row])

    def _stackable(self, row: int) -> np.ndarray:
        array = self.record(row)
        return array.mean(axis=0) if self.ragged and array.ndim > 1 else array

    def _stack(self, rows: Iterable[int], shape: tuple[int, ...] | None = None) -> np.ndarray:
        arrays = [self._stackable(int(row)) for row in rows]
        if arrays and len({a.shape for a in arrays} | ({shape} if shape is not None else set())) > 1:
            raise DuchoError(f"{self.folder}: its records have different shapes; pool the layer")
        return np.stack(arrays)

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        shape = None
        for start in range(0, len(self), rows):
            block = self._stack(range(start, min(start + rows, len(self))), shape)
            shape = block.shape[1:]
            yield start, block

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return as_vectors(self._stack(positions)) if len(positions) else np.empty((0, 0), np.float32)


def _id_rows(folder: Path, interactions: bool) -> list[RecordKey | None]:
    """ids.tsv of the matrix and sparse formats: a header, then `item` or `user<TAB>item` per row."""
    lines = (folder / "ids.tsv").read_text(encoding="utf-8").split("\n")[1:]
    if lines and lines[-1] == "":
        lines.pop()
    if interactions:
        return [RecordKey(item, user) for user, _, item in (line.partition("\t") for line in lines)]
    return [RecordKey(line) for line in lines]


def _same_count(folder: Path, ids: int, rows: int) -> None:
    if ids != rows:
        raise DuchoError(f"{folder}: ids.tsv lists {ids} ids for {rows} rows of features; the output is damaged, "
                         "run again with --overwrite")


class MatrixRecords(Records):
    """features.npy (N, ...), memory-mapped, with ids.tsv; read in chunks with plain reads, not the memory map, so
    that pages read stay out of the process once their chunk is done."""

    def __init__(self, layer: Layer) -> None:
        self.memmap = np.load(layer.folder / "features.npy", mmap_mode="r")
        super().__init__(layer, _id_rows(layer.folder, layer.interactions), self.memmap.shape[1:])
        _same_count(layer.folder, len(self.keys), self.memmap.shape[0])

    def record(self, row: int) -> np.ndarray:
        return np.asarray(self.memmap[row])

    def matrix(self) -> np.ndarray:
        return np.asarray(self.memmap)  # still memory-mapped

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        shape = self.memmap.shape[1:]
        width = int(np.prod(shape))
        with open(self.memmap.filename, "rb") as handle:
            handle.seek(self.memmap.offset)
            for start in range(0, len(self.memmap), rows):
                count = min(rows, len(self.memmap) - start)
                yield start, np.fromfile(handle, dtype=self.memmap.dtype, count=count * width).reshape(count, *shape)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """One read per row (not the memory map, whose pages would stay in the process)."""
        positions = np.asarray(positions, dtype=np.int64)
        shape, dtype = self.memmap.shape[1:], self.memmap.dtype
        size = int(np.prod(shape)) * dtype.itemsize
        out = np.empty((len(positions), *shape), np.float32)
        with open(self.memmap.filename, "rb") as handle:
            descriptor = handle.fileno()
            for index in np.argsort(positions, kind="stable").tolist():
                data = os.pread(descriptor, size, self.memmap.offset + int(positions[index]) * size)
                out[index] = np.frombuffer(data, dtype=dtype).reshape(shape)
        return as_vectors(out)


class SparseRecords(Records):
    """features.npz (scipy.sparse CSR, float32) with ids.tsv; rows made dense a block at a time."""

    def __init__(self, layer: Layer) -> None:
        super().__init__(layer, _id_rows(layer.folder, layer.interactions), [])

    @functools.cached_property
    def csr(self) -> Any:
        from scipy import sparse

        matrix = sparse.load_npz(self.folder / "features.npz").tocsr()
        _same_count(self.folder, len(self.keys), matrix.shape[0])
        return matrix

    def record(self, row: int) -> np.ndarray:
        return self.csr[row].toarray().reshape(-1)

    def matrix(self) -> np.ndarray:
        return self.csr.toarray()

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.csr.shape[0], rows):
            yield start, self.csr[start:start + rows].toarray()

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return as_vectors(self.csr[np.asarray(positions)].toarray())


class ParquetRecords(Records):
    """shards/part-NNNNN.parquet: the id columns read whole, the vectors by record batch (`record` reads them all
    once)."""

    def __init__(self, layer: Layer) -> None:
        import pyarrow.parquet as pq

        shards = layer.folder / PARQUET_SHARDS
        found = (PARQUET_PART.fullmatch(p.name) for p in shards.iterdir()) if shards.is_dir() else iter(())
        self.parts = [shards / m.group(0) for m in sorted((m for m in found if m), key=lambda m: int(m["index"]))]
        columns = ["user", "item"] if layer.interactions else ["id"]
        keys: list[RecordKey | None] = []
        self.record_shape: list[int] = []
        for part in self.parts:
            file = pq.ParquetFile(part)
            self.record_shape = json.loads((file.schema_arrow.metadata or {}).get(b"ducho.shape", b"[]")) or \
                self.record_shape
            table = file.read(columns=columns)
            if layer.interactions:
                keys += [RecordKey(i, u) for u, i in zip(*(table.column(c).to_pylist() for c in columns))]
            else:
                keys += [RecordKey(i) for i in table.column("id").to_pylist()]
        super().__init__(layer, keys, self.record_shape)

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        import pyarrow.parquet as pq

        start = 0
        for part in self.parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=rows, columns=["vector"]):
                column = batch.column(0)
                flat = column.flatten().to_numpy(zero_copy_only=False)
                yield start, flat.reshape(len(batch), *(self.record_shape or [column.type.list_size]))
                start += len(batch)

    @functools.cached_property
    def _all(self) -> np.ndarray:
        return super().matrix()

    def matrix(self) -> np.ndarray:
        return self._all

    def record(self, row: int) -> np.ndarray:
        return self._all[row]


def read_failures(folder: Path) -> list[tuple[str, str, str]]:
    """failures.tsv of a job's output folder: (id, source, reason) per skipped record."""
    path = folder / "failures.tsv"
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        next(handle, None)
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if parts and parts[0]:
                rows.append((parts[0], *(parts[1:3] + ["", ""])[:2]))
    return rows
