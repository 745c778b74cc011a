"""Find the layer folders under an output folder and read their vectors in chunks, whatever the format (npy, matrix,
sparse, parquet), so the report never holds a whole layer in memory (matrix: memory-mapped; sparse: its CSR)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from .errors import DuchoError
from .ids import PAIR_SEPARATOR
from .writers import MANIFEST, PARQUET_SHARDS, PARTS, read_manifest

MAX_FLAT = 8192  # a multi-dimensional record up to this size is flattened; larger ones are mean-pooled (C, H, W -> C)


@dataclass
class Layer:
    """One layer folder: its manifest and where it sits."""

    folder: Path
    manifest: dict[str, Any]
    name: str  # the folder relative to the root given, for the page

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
        return str(self.manifest.get("format") or _guess_format(self.folder))

    @property
    def interactions(self) -> bool:
        return self.manifest.get("source") == "interactions"

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
    """Every folder holding a manifest.json under `roots` (not descending into layers), sorted by path."""
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


class Vectors:
    """A layer's records: `ids` (item, or user__item), `items` and `users`, and its vectors as (n, d) float32 in
    chunks (`chunks`) or by position (`rows`)."""

    note = ""  # how records that are not vectors were made into vectors

    def __init__(self, ids: list[str], items: list[str], users: list[str | None]) -> None:
        self.ids, self.items, self.users = ids, items, users

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first position, (n, d) float32) in record order."""
        raise NotImplementedError

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


class NpyVectors(Vectors):
    """One `.npy` per record; token/time matrices of varying length are mean-pooled over their steps."""

    def __init__(self, layer: Layer) -> None:
        self.files = sorted((p for p in os.scandir(layer.folder) if p.name.endswith(".npy") and p.is_file()),
                            key=lambda p: p.name)
        ids, items, users = [], [], []
        for entry in self.files:
            stem = entry.name[:-4]
            if layer.interactions and PAIR_SEPARATOR in stem:
                user, _, item = stem.partition(PAIR_SEPARATOR)
                users.append(unquote(user))
                items.append(unquote(item))
                ids.append(f"{users[-1]}{PAIR_SEPARATOR}{items[-1]}")
            else:
                users.append(None)
                items.append(unquote(stem))
                ids.append(items[-1])
        super().__init__(ids, items, users)
        shape = layer.manifest.get("shape") or []
        self.ragged = bool(shape) and shape[0] == "steps"
        if self.ragged:
            self.note = "token/time matrices mean-pooled over their steps"
        elif len(shape) > 1:
            self.note = "flattened" if int(np.prod(shape)) <= MAX_FLAT else "mean-pooled over positions"

    def _load(self, index: int) -> np.ndarray:
        array = np.load(self.files[index].path)
        return array.mean(axis=0) if self.ragged and array.ndim > 1 else array

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(self.files), rows):
            stop = min(start + rows, len(self.files))
            yield start, as_vectors(np.stack([self._load(i) for i in range(start, stop)]))

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return as_vectors(np.stack([self._load(int(i)) for i in positions])) if len(positions) else \
            np.empty((0, 0), np.float32)


def _read_ids(path: Path, interactions: bool) -> tuple[list[str], list[str], list[str | None]]:
    """ids.tsv of the matrix and sparse formats: a header, then `item` or `user<TAB>item` per row."""
    with path.open(encoding="utf-8") as handle:
        next(handle, None)
        lines = [line.rstrip("\n") for line in handle]
    if not interactions:
        return lines, lines, [None] * len(lines)
    pairs = [line.split("\t", 1) + [""] for line in lines]
    users: list[str | None] = [p[0] for p in pairs]
    items = [p[1] for p in pairs]
    return [f"{u}{PAIR_SEPARATOR}{i}" for u, i in zip(users, items)], items, users


class MatrixVectors(Vectors):
    """features.npy (N, ...), memory-mapped, with ids.tsv."""

    def __init__(self, layer: Layer) -> None:
        super().__init__(*_read_ids(layer.folder / "ids.tsv", layer.interactions))
        self.matrix = np.load(layer.folder / "features.npy", mmap_mode="r")
        if self.matrix.ndim > 2:
            self.note = "flattened" if int(np.prod(self.matrix.shape[1:])) <= MAX_FLAT else \
                "mean-pooled over positions"

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Plain reads, not the memory map: pages read stay out of the process once their chunk is done."""
        row = self.matrix.shape[1:]
        width = int(np.prod(row))
        with open(self.matrix.filename, "rb") as handle:
            handle.seek(self.matrix.offset)
            for start in range(0, len(self.matrix), rows):
                count = min(rows, len(self.matrix) - start)
                block = np.fromfile(handle, dtype=self.matrix.dtype, count=count * width)
                yield start, as_vectors(block.reshape(count, *row))

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """One read per row (not the memory map, whose pages would stay in the process)."""
        positions = np.asarray(positions, dtype=np.int64)
        shape, dtype = self.matrix.shape[1:], self.matrix.dtype
        size = int(np.prod(shape)) * dtype.itemsize
        out = np.empty((len(positions), *shape), np.float32)
        with open(self.matrix.filename, "rb") as handle:
            descriptor = handle.fileno()
            for index in np.argsort(positions, kind="stable").tolist():
                data = os.pread(descriptor, size, self.matrix.offset + int(positions[index]) * size)
                out[index] = np.frombuffer(data, dtype=dtype).reshape(shape)
        return as_vectors(out)


class SparseVectors(Vectors):
    """features.npz (scipy.sparse CSR), rows made dense a chunk at a time."""

    def __init__(self, layer: Layer) -> None:
        from scipy import sparse

        super().__init__(*_read_ids(layer.folder / "ids.tsv", layer.interactions))
        self.matrix = sparse.load_npz(layer.folder / "features.npz").tocsr()

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.matrix.shape[0], rows):
            yield start, self.matrix[start:start + rows].toarray().astype(np.float32)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return self.matrix[np.asarray(positions)].toarray().astype(np.float32)


class ParquetVectors(Vectors):
    """shards/part-NNNNN.parquet: id columns read whole, vectors in record batches."""

    def __init__(self, layer: Layer) -> None:
        import pyarrow.parquet as pq

        self.parts = [layer.folder / name for name in layer.manifest.get("shards", [])] or \
            sorted((layer.folder / PARQUET_SHARDS).glob("part-*.parquet"))
        self.parts = [p for p in self.parts if p.is_file()]
        ids: list[str] = []
        items: list[str] = []
        users: list[str | None] = []
        self.shape: list[int] = []
        for part in self.parts:
            file = pq.ParquetFile(part)
            meta = file.schema_arrow.metadata or {}
            self.shape = json.loads(meta.get(b"ducho.shape", b"[]")) or self.shape
            columns = ["user", "item"] if layer.interactions else ["id"]
            table = file.read(columns=columns)
            if layer.interactions:
                part_users, part_items = (table.column(c).to_pylist() for c in columns)
                users += part_users
                items += part_items
                ids += [f"{u}{PAIR_SEPARATOR}{i}" for u, i in zip(part_users, part_items)]
            else:
                part_ids = table.column("id").to_pylist()
                ids += part_ids
                items += part_ids
                users += [None] * len(part_ids)
        super().__init__(ids, items, users)
        if len(self.shape) > 1:
            self.note = "flattened" if int(np.prod(self.shape)) <= MAX_FLAT else "mean-pooled over positions"

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        import pyarrow.parquet as pq

        start = 0
        for part in self.parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=rows, columns=["vector"]):
                column = batch.column(0)
                width = column.type.list_size
                flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                block = flat.reshape(len(batch), width)
                if len(self.shape) > 1:
                    block = block.reshape(len(batch), *self.shape)
                yield start, as_vectors(block)
                start += len(batch)


def open_vectors(layer: Layer) -> Vectors:
    """The reader for the layer's format (from its manifest, else from its files)."""
    readers: dict[str, type[Vectors]] = {"matrix": MatrixVectors, "sparse": SparseVectors,
                                         "parquet": ParquetVectors}
    return readers.get(layer.fmt, NpyVectors)(layer)  # type: ignore[call-arg]


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
