"""Disk-backed scratch for the report's per-record data, so that its memory stays bounded whatever the record count:
columns appended in record order and read back in chunks, and partitions that spread records over files by a key so
that equal keys meet in one partition small enough for memory. The files live in one temporary folder (under
$TMPDIR, else /tmp), removed when the analysis ends or fails."""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
from numpy.typing import DTypeLike

PART_BYTES = 32 << 20  # about this much of one partition is in memory at a time (and a few times that in temporaries)
READ_BYTES = 8 << 20  # read back at a time


class Column:
    """Values of one dtype appended in order to a file; read back in chunks, sequentially, or at given positions."""

    def __init__(self, path: Path, dtype: DTypeLike) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._out: BinaryIO | None = path.open("wb")

    def append(self, values: np.ndarray) -> None:
        assert self._out is not None, f"{self.path.name} is closed"
        np.ascontiguousarray(values, dtype=self.dtype).tofile(self._out)
        self.count += len(values)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first position, values) in order, READ_BYTES at a time."""
        self.close()
        rows = max(1, READ_BYTES // self.dtype.itemsize)
        with self.path.open("rb") as handle:
            for start in range(0, self.count, rows):
                yield start, np.fromfile(handle, self.dtype, count=min(rows, self.count - start))

    @contextlib.contextmanager
    def sequential(self) -> Iterator[Callable[[int], np.ndarray]]:
        """A function that returns the next `count` values at each call."""
        self.close()
        with self.path.open("rb") as handle:
            yield lambda count: np.fromfile(handle, self.dtype, count=count)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The values at sorted `positions`, in one pass."""
        out = np.empty(len(positions), self.dtype)
        for start, values in self.chunks():
            lo, hi = np.searchsorted(positions, [start, start + len(values)])
            out[lo:hi] = values[positions[lo:hi] - start]
        return out


class Partitions:
    """Entries of a structured dtype spread over files by their field `key` modulo `count`, `count` set so that a
    partition of the `expected` entries holds about PART_BYTES; read back one partition at a time. With one
    partition, the entries stay in memory."""

    def __init__(self, folder: Path, dtype: DTypeLike, key: str, expected: int) -> None:
        self.folder, self.dtype, self.key = folder, np.dtype(dtype), key
        self.count = max(1, math.ceil(expected * self.dtype.itemsize / PART_BYTES))
        self.sizes = np.zeros(self.count, np.int64)
        self._entries: list[np.ndarray] = []
        self._parts: list[np.ndarray] = []
        self._buffered = 0
        folder.mkdir()

    def add(self, entries: np.ndarray) -> None:
        parts = (entries[self.key].astype(np.uint64) % np.uint64(self.count)).astype(np.int64)
        self.sizes += np.bincount(parts, minlength=self.count)
        self._entries.append(entries)
        self._parts.append(parts)
        self._buffered += entries.nbytes
        if self.count > 1 and self._buffered > PART_BYTES // 4:
            self._flush()

    def _flush(self) -> None:
        if not self._entries:
            return
        entries, parts = np.concatenate(self._entries), np.concatenate(self._parts)
        self._entries, self._parts, self._buffered = [], [], 0
        order = np.argsort(parts.astype(np.uint16) if self.count <= 1 << 16 else parts, kind="stable")  # radix
        bounds = np.searchsorted(parts[order], np.arange(self.count + 1))
        for part in np.flatnonzero(np.diff(bounds)).tolist():
            with (self.folder / str(part)).open("ab") as handle:
                entries[order[bounds[part]:bounds[part + 1]]].tofile(handle)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.count == 1:
            yield np.concatenate(self._entries) if self._entries else np.empty(0, self.dtype)
            self._entries, self._parts = [], []
            return
        self._flush()
        for part in range(self.count):
            path = self.folder / str(part)
            if path.exists():
                entries = np.fromfile(path, self.dtype)
                path.unlink()
                yield entries


class Scratch:
    """The temporary folder of one analysis, with its columns and partitions; a context manager."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="ducho-report-")
        self.folder = Path(self._folder.name)
        self._columns: list[Column] = []
        self._names = 0

    def _path(self, name: str) -> Path:
        self._names += 1
        return self.folder / f"{self._names}-{name}"

    def column(self, name: str, dtype: DTypeLike) -> Column:
        column = Column(self._path(name), dtype)
        self._columns.append(column)
        return column

    def partitions(self, name: str, dtype: DTypeLike, key: str, expected: int) -> Partitions:
        return Partitions(self._path(name), dtype, key, expected)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for column in self._columns:
            column.close()
        self._folder.cleanup()


def order_statistics(column: Column, ranks: np.ndarray) -> np.ndarray:
    """The values at 0-based sorted positions `ranks` of a column of non-negative float32, exactly, in two passes
    and bounded memory: such a float's bits sort as its value, so the high 16 bits are counted first, then the low
    16 bits of the values in each bin that holds a rank."""
    ranks = np.asarray(ranks, np.int64)
    high = np.zeros(1 << 16, np.int64)
    for _, values in column.chunks():
        high += np.bincount(values.view(np.uint32) >> 16, minlength=1 << 16)
    upto = np.cumsum(high)
    bins = np.searchsorted(upto, ranks, side="right")
    low = {int(b): np.zeros(1 << 16, np.int64) for b in np.unique(bins)}
    for _, values in column.chunks():
        bits = values.view(np.uint32)
        for b, counts in low.items():
            counts += np.bincount(bits[(bits >> 16) == b] & 0xFFFF, minlength=1 << 16)
    found = [(b << 16) | int(np.searchsorted(np.cumsum(low[b]), rank - (upto[b] - high[b]), side="right"))
             for rank, b in zip(ranks.tolist(), bins.tolist())]
    return np.array(found, np.uint32).view(np.float32)
