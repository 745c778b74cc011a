"""Write features: one `.npy` per record (the paper's layout), one `(N, D)` matrix with its id file, or Parquet
shards (`parquet_writer`).

Every file is written to a temporary name and renamed into place, so a file that exists is complete; the
temporaries a killed run left are removed when a writer next opens their folder.
Work is grouped in chunks of records; a chunk whose outputs all exist is skipped on a re-run (resume). Writers that
buffer a chunk keep each chunk's records apart, so batches of several chunks may arrive interleaved before their
`end_chunk`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DuchoError
from .ids import RecordKey

MANIFEST = "manifest.json"
PARTS = ".parts"
RECORDS = "records.tsv"  # stem and input digest of each record of a complete layer (`incremental`)
PREVIOUS = ".previous"  # the complete output an incremental run takes unchanged records from (`incremental`)
PARQUET_SHARDS = "shards"  # format parquet: the folder of a layer's part files
PARQUET_PART = re.compile(r"part-(?P<index>\d{5,})\.parquet")


def part_name(shard: int) -> str:
    """The Parquet part of a shard (`format: parquet`)."""
    return f"part-{shard:05d}.parquet"


_TEMPORARY = re.compile(r"\..+\.(?P<pid>\d+)\.\d+\.tmp")


def temporary(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: `.<name>.<pid>.<thread id>.tmp` beside it (the only
    temporary name Ducho writes; `is_temporary` and `remove_temporaries` know it by the same pattern)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def is_temporary(name: str) -> bool:
    """Whether a file name is one `temporary` makes (a user's `notes.tmp` is not)."""
    return _TEMPORARY.fullmatch(name) is not None


def remove_temporaries(folder: Path) -> None:
    """Remove the temporaries in `folder` that an earlier, killed run left, keeping those of a process still running
    on this machine (another run writing here). This process's own are removed: it has not started writing here,
    and a restarted container reuses the pids of the last one."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        match = _TEMPORARY.fullmatch(entry.name)
        if match and not _running_elsewhere(int(match["pid"])):
            with contextlib.suppress(OSError):  # a failed clean-up must not stop the run
                entry.unlink()


def _running_elsewhere(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # (os.kill on Windows terminates the process)
        return False
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it asks whether the process exists
    except PermissionError:  # it does, another user's
        return True
    except (OSError, OverflowError):  # no such process
        return False
    return True


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(handle)` on a temporary file beside `path`, then rename it into place."""
    tmp = temporary(path)
    try:
        handle = open(tmp, "wb")  # noqa: SIM115
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(tmp, "wb")  # noqa: SIM115
    try:
        with handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


FLOAT32 = np.dtype("<f4")
FLOAT16 = np.dtype("<f2")
DTYPES = {"float32": FLOAT32, "float16": FLOAT16}  # the `dtype` setting -> what is written


def cast(array: np.ndarray, dtype: np.dtype, where: object) -> np.ndarray:
    """`array` as `dtype`; a value beyond float16's range (+-65504) is an error rather than a stored inf."""
    with np.errstate(over="ignore"):  # reported below, as an error
        out = np.asarray(array).astype(dtype, copy=False)
    if out.dtype == FLOAT16 and not np.isfinite(out).all():
        raise DuchoError(f"{where}: values beyond float16's range (+-65504) would be written as inf or nan; use "
                         "dtype float32")
    return out


def save_npy(path: Path, array: np.ndarray, dtype: np.dtype = FLOAT32) -> None:
    """The bytes `np.save` writes for a float32 (or float16) array, with its header made once per shape: np.save
    builds it for every file (22 us of the 24 us it takes for a 384-float vector in memory; creating the file costs
    41 us on a fast disk)."""
    array = np.ascontiguousarray(array, dtype=dtype)
    header = _npy_header(array.shape, array.dtype.str)
    atomic_write(path, lambda handle: (handle.write(header), handle.write(array.data)))


@functools.lru_cache(maxsize=256)
def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


class LayerWriter:
    """Outputs of one layer of one model, in `folder`."""

    def __init__(self, folder: Path, fingerprint: str, input_sha256: str, overwrite: bool,
                 interactions: bool, dtype: str = "float32", previous: Any = None) -> None:
        self.folder = folder
        self.previous = previous  # incremental.Previous: the complete output of another input, or None
        self.interactions = interactions
        self.dtype = DTYPES[dtype]
        self.shape: tuple[int, ...] | None = None
        self.ragged = False
        self.written = 0
        self.pending: dict[int, dict[int, tuple[RecordKey, np.ndarray]]] = {}  # chunk -> position -> record
        previous = read_manifest(folder) or {}
        if overwrite:
            self.clear()
            previous = {}
        elif previous and previous.get("fingerprint") != fingerprint:
            raise DuchoError(f"{folder} holds features made with other settings (manifest fingerprint "
                             f"{previous.get('fingerprint')}, now {fingerprint}); run with --overwrite "
                             "or choose another output_path")
        # the same settings already ran to the end on the same input file: nothing to do (unless its files are gone)
        self.complete = previous.get("status") == "complete" and previous.get("input_sha256") == input_sha256
        # what earlier runs left here was made from another input (files of the same ids may hold old values)
        self.input_changed = bool(previous) and previous.get("input_sha256") != input_sha256
        self.previous_count = int(previous.get("count", 0))
        folder.mkdir(parents=True, exist_ok=True)
        for place in (folder, folder / PARTS):
            remove_temporaries(place)

    def clear(self) -> None:
        """Remove what earlier runs wrote here (only Ducho's own files)."""
        if not self.folder.is_dir():
            return
        shards = self.folder / PARQUET_SHARDS
        for entry in [*self.folder.iterdir(), *(shards.iterdir() if shards.is_dir() else ())]:
            if entry.name in (PARTS, PREVIOUS):
                shutil.rmtree(entry)
            elif (entry.suffix in (".npy", ".npz", ".tsv", ".json") or is_temporary(entry.name)
                  or (entry.parent == shards and PARQUET_PART.fullmatch(entry.name))):
                entry.unlink()

    def check_shape(self, array: np.ndarray) -> None:
        """Every record of a layer has the same shape (except token/time matrices, which vary in length)."""
        shape = tuple(array.shape)
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            if len(shape) == len(self.shape) and shape[1:] == self.shape[1:]:
                self.ragged = True
            else:
                raise DuchoError(f"{self.folder}: a record has shape {shape}, earlier ones {self.shape}")

    def shape_label(self) -> list[Any]:
        if self.shape is None:
            return []
        return ["steps", *self.shape[1:]] if self.ragged else list(self.shape)

    def describe(self) -> dict[str, Any]:
        """What the writer adds to the layer's manifest (the Parquet writer: its shards)."""
        return {}

    def hold(self, fmt: str, chunk: int, positions: Sequence[int], keys: Sequence[RecordKey],
             arrays: Sequence[np.ndarray]) -> None:
        """Keep records of `chunk` until its `end_chunk`; `fmt` needs one shape per record."""
        pending = self.pending.setdefault(chunk, {})
        for position, key, array in zip(positions, keys, arrays):
            self.check_shape(array)
            if self.ragged:
                raise DuchoError(f"{self.folder}: format {fmt} needs one shape per record; this layer gives "
                                 "token/time matrices of varying length (use pooling or format: npy)")
            pending[position] = (key, array)

    def write(self, chunk: int, positions: Sequence[int], keys: Sequence[RecordKey],
              arrays: Sequence[np.ndarray]) -> None:
        """Records of `chunk` (at `positions` in it) and their arrays."""
        raise NotImplementedError

    def keep(self, chunk: int, positions: Sequence[int], keys: Sequence[RecordKey]) -> None:
        """Records of `chunk` whose input did not change: their vectors come from the previous output."""
        self.write(chunk, positions, keys, self.previous.vectors(keys))

    def remove(self, stems: Sequence[str]) -> None:
        """Records of the previous output the input no longer has (only `npy` keeps files of them to remove)."""

    def take(self, chunk: int) -> tuple[list[RecordKey], list[np.ndarray]]:
        """The records held for `chunk`, in input order, forgotten here."""
        pending = self.pending.pop(chunk, {})
        order = sorted(pending)
        return [pending[p][0] for p in order], [pending[p][1] for p in order]


class NpyWriter(LayerWriter):
    """`<folder>/<id>.npy` (interactions `<user>__<item>.npy`), one float32 (or float16) array per record."""

    layout = "one .npy per record: <item>.npy, interactions <user>__<item>.npy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.existing = {p.name[:-4] for p in self.folder.iterdir() if p.suffix == ".npy"}
        self.complete = self.complete and len(self.existing) >= self.previous_count  # none deleted since

    def is_done(self, chunk: int, keys: Sequence[RecordKey]) -> bool:
        """Every file is there and was made from this input (after an input change only digests tell, see
        `incremental`)."""
        return self.complete or (not self.input_changed and self.previous is None
                                 and all(key.stem in self.existing for key in keys))

    def keep(self, chunk: int, positions: Sequence[int], keys: Sequence[RecordKey]) -> None:
        """Nothing to write: the files of unchanged records are the previous output's."""

    def remove(self, stems: Sequence[str]) -> None:
        for stem in stems:
            (self.folder / f"{stem}.npy").unlink(missing_ok=True)

    def write(self, chunk: int, positions: Sequence[int], keys: Sequence[RecordKey],
              arrays: Sequence[np.ndarray]) -> None:
        if self.complete:  # redone for another layer's lost files: this one's are all there
            return
        for key, array in zip(keys, arrays):
            self.check_shape(array)
            save_npy(self.folder / f"{key.stem}.npy", cast(array, self.dtype, self.folder / key.stem), self.dtype)
            self.written += 1

    def end_chunk(self, chunk: int, size: int) -> None:
        """Nothing to do: every record was written as it came."""

    def finish(self) -> int:
        return sum(1 for p in self.folder.iterdir() if p.suffix == ".npy")


class MatrixWriter(LayerWriter):
    """`<folder>/features.npy` of shape (N, ...) and `<folder>/ids.tsv` in the same row order (input order)."""

    layout = "features.npy (N, ...) with ids.tsv in the same row order"
    features = "features.npy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parts = self.folder / PARTS
        if self.input_changed and self.parts.is_dir():  # parts of a killed run on another input
            shutil.rmtree(self.parts)
        self.complete = self.complete and all((self.folder / name).is_file() for name in (self.features, "ids.tsv"))

    def is_done(self, chunk: int, keys: Sequence[RecordKey]) -> bool:
        return self.complete or (self.parts / f"{chunk:06d}.npy").is_file()

    def write(self, chunk: int, positions: Sequence[int], keys: Sequence[RecordKey],
              arrays: Sequence[np.ndarray]) -> None:
        if self.complete:  # redone for another layer's lost files: this one's are all there
            return
        self.hold("matrix", chunk, positions, keys, arrays)

    def end_chunk(self, chunk: int, size: int) -> None:
        """Write the chunk in input order as one part; parts are joined by `finish`."""
        keys, arrays = self.take(chunk)
        if not keys:
            return
        write_text(self.parts / f"{chunk:06d}.ids.tsv", "".join(self._id_line(key) for key in keys))
        save_npy(self.parts / f"{chunk:06d}.npy", cast(np.stack(arrays), self.dtype, self.folder), self.dtype)
        self.written += len(keys)

    def _id_line(self, key: RecordKey) -> str:
        return f"{key.user}\t{key.item}\n" if self.interactions else f"{key.item}\n"

    def _join_ids(self, parts: Sequence[Path]) -> None:
        header = "user\titem\n" if self.interactions else "item\n"
        ids = "".join(p.with_suffix(".ids.tsv").read_text(encoding="utf-8") for p in parts)
        write_text(self.folder / "ids.tsv", header + ids)

    def finish(self) -> int:
        """Join the parts into features.npy + ids.tsv without holding them all in memory."""
        if self.complete:
            return self.previous_count
        parts = sorted(self.parts.glob("*.npy")) if self.parts.is_dir() else []
        if not parts:
            return 0
        arrays = [np.load(p, mmap_mode="r") for p in parts]
        total = sum(a.shape[0] for a in arrays)
        self.shape = tuple(arrays[0].shape[1:])
        tmp = temporary(self.folder / "features.npy")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(total, *self.shape))
            start = 0
            for array in arrays:
                out[start:start + array.shape[0]] = array
                start += array.shape[0]
            out.flush()
            del out
            self._join_ids(parts)
            os.replace(tmp, self.folder / "features.npy")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        shutil.rmtree(self.parts)
        return total


class SparseMatrixWriter(MatrixWriter):
    """`<folder>/features.npz`: a scipy.sparse CSR matrix (N, D) of float32, with ids.tsv in the same row order.
    For mostly-zero features (TF-IDF): the disk and memory cost follows the non-zeros, not N x D."""

    layout = "features.npz (scipy.sparse CSR, N x D) with ids.tsv in the same row order"
    features = "features.npz"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.dtype != FLOAT32:
            raise DuchoError(f"{self.folder}: format sparse stores float32 (scipy.sparse has no float16)")

    def is_done(self, chunk: int, keys: Sequence[RecordKey]) -> bool:
        return self.complete or (self.parts / f"{chunk:06d}.npz").is_file()

    def write(self, chunk: int, positions: Sequence[int], keys: Sequence[RecordKey],
              arrays: Sequence[np.ndarray]) -> None:
        if any(np.ndim(array) != 1 for array in arrays):
            raise DuchoError(f"{self.folder}: format sparse needs one vector per record (pool the layer)")
        super().write(chunk, positions, keys, arrays)

    def end_chunk(self, chunk: int, size: int) -> None:
        from scipy import sparse

        keys, arrays = self.take(chunk)
        if not keys:
            return
        rows = sparse.csr_matrix(np.stack(arrays).astype(np.float32))
        write_text(self.parts / f"{chunk:06d}.ids.tsv", "".join(self._id_line(key) for key in keys))
        atomic_write(self.parts / f"{chunk:06d}.npz", lambda handle: sparse.save_npz(handle, rows))
        self.written += len(keys)

    def finish(self) -> int:
        from scipy import sparse

        if self.complete:
            return self.previous_count
        parts = sorted(self.parts.glob("*.npz")) if self.parts.is_dir() else []
        if not parts:
            return 0
        matrix = sparse.vstack([sparse.load_npz(p) for p in parts], format="csr", dtype=np.float32)
        self.shape = (int(matrix.shape[1]),)
        self._join_ids(parts)
        atomic_write(self.folder / "features.npz", lambda handle: sparse.save_npz(handle, matrix))
        shutil.rmtree(self.parts)
        return int(matrix.shape[0])


def open_writer(fmt: str, folder: Path, fingerprint: str, input_sha256: str, overwrite: bool,
                interactions: bool, dtype: str = "float32", previous: Any = None) -> LayerWriter:
    cls: type[LayerWriter] = {"matrix": MatrixWriter, "sparse": SparseMatrixWriter}.get(fmt, NpyWriter)
    if fmt == "parquet":
        from .parquet_writer import ParquetWriter  # pyarrow is imported for this format only

        cls = ParquetWriter
    return cls(folder, fingerprint, input_sha256, overwrite, interactions, dtype, previous)


def write_failures(path: Path, rows: Sequence[tuple[str, str, str]]) -> None:
    """`failures.tsv`: one line per skipped record (id, source, reason)."""
    def clean(value: str) -> str:
        return value.replace("\t", " ").replace("\n", " ")
    lines = ["id\tsource\treason\n"] + [f"{clean(a)}\t{clean(b)}\t{clean(c)}\n" for a, b, c in rows]
    write_text(path, "".join(lines))
