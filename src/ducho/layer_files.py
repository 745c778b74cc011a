"""Read back what a run wrote in one layer folder, whatever its format (the manifest says which): the record keys in
row order and their vectors. `ducho export` reads runs with it.

Row order: the run's input order for `matrix`, `sparse` and `parquet`; file-name order for `npy` (its files keep no
order). `npy` file names are decoded back to ids (`ids.stem_key`); a name that cannot give its id back (shortened
past 200 bytes, or an ambiguous `<user>__<item>`) has no key, and is reported by whoever needs one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DuchoError
from .ids import RecordKey, stem_key
from .writers import MANIFEST, PARQUET_PART, PARQUET_SHARDS, read_manifest


@dataclass
class LayerFiles:
    """One layer folder of a run: its manifest, a key per row (None where a file name gives none), the vectors."""

    folder: Path
    manifest: dict[str, Any]
    stems: list[str]  # the file-name stem of each row's key (how ids are matched, see `row_of`)
    keys: list[RecordKey | None]
    load_all: Callable[[], np.ndarray]  # every row, shape (n, *shape)
    load_one: Callable[[int], np.ndarray]
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def interactions(self) -> bool:
        return self.manifest.get("source") == "interactions"

    @property
    def shape(self) -> list[Any]:
        """The manifest's shape of one record (["steps", d] for token matrices of varying length)."""
        return list(self.manifest.get("shape") or [])

    def label(self, row: int) -> str:
        key = self.keys[row]
        return key.label if key is not None else self.stems[row]

    def row_of(self, key: RecordKey) -> int | None:
        """The row of `key`, matched by its file-name stem (so a shortened npy name still matches its id)."""
        if not self._rows:
            self._rows = {stem: row for row, stem in enumerate(self.stems)}
        return self._rows.get(key.stem)

    def require_keys(self) -> list[RecordKey]:
        """Every row's key; an error naming the file names that give none."""
        missing = [self.stems[row] for row, key in enumerate(self.keys) if key is None]
        if missing:
            raise DuchoError(f"{self.folder}: {len(missing)} file name(s) do not give their id back (shortened past "
                             f"200 bytes, or a <user>__<item> pair with '__' inside an id), e.g. {missing[0]}.npy; "
                             "run with format matrix or parquet, which keep the ids as written")
        return [key for key in self.keys if key is not None]

    def matrix(self) -> np.ndarray:
        """All rows as one array (n, *shape); an error for token matrices of varying length."""
        if self.shape and self.shape[0] == "steps":
            raise DuchoError(f"{self.folder}: its records are token/time matrices of varying length (shape "
                             f"{self.shape}); pool the layer for this export")
        return self.load_all()


def read_layer(folder: Path) -> LayerFiles:
    """The layer folder's records, as its complete manifest describes them."""
    manifest = read_manifest(folder)
    if manifest is None or "format" not in manifest:
        raise DuchoError(f"{folder} holds no run manifest ({MANIFEST}); give a layer folder of a run or a folder "
                         "above")
    if manifest.get("status") != "complete":
        raise DuchoError(f"{folder}: the run has not finished (manifest status {manifest.get('status')!r}); run it "
                         "to the end first")
    interactions = manifest.get("source") == "interactions"
    reader = {"npy": _npy, "matrix": _matrix, "sparse": _sparse, "parquet": _parquet}.get(manifest["format"])
    if reader is None:
        raise DuchoError(f"{folder}: unknown format {manifest['format']!r} in its manifest")
    stems, keys, load_all, load_one = reader(folder, interactions)
    return LayerFiles(folder, manifest, stems, keys, load_all, load_one)


Reader = tuple[list[str], list[RecordKey | None], Callable[[], np.ndarray], Callable[[int], np.ndarray]]


def _npy(folder: Path, interactions: bool) -> Reader:
    paths = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file())
    stems = [p.name[:-4] for p in paths]
    keys = [stem_key(stem, interactions) for stem in stems]

    def load_all() -> np.ndarray:
        arrays = [np.load(p) for p in paths]
        if len({a.shape for a in arrays}) > 1:
            raise DuchoError(f"{folder}: its records have different shapes; pool the layer for this export")
        return np.stack(arrays) if arrays else np.zeros((0,), np.float32)

    return stems, keys, load_all, lambda row: np.load(paths[row])


def _id_rows(folder: Path, interactions: bool) -> list[RecordKey]:
    lines = (folder / "ids.tsv").read_text(encoding="utf-8").split("\n")[1:]  # after the header
    lines = lines[:-1] if lines and lines[-1] == "" else lines
    if interactions:
        return [RecordKey(item, user) for user, item in (line.split("\t", 1) for line in lines)]
    return [RecordKey(line) for line in lines]


def _matrix(folder: Path, interactions: bool) -> Reader:
    keys = _id_rows(folder, interactions)
    features = np.load(folder / "features.npy", mmap_mode="r")
    _same_count(folder, len(keys), features.shape[0])
    return [k.stem for k in keys], list(keys), lambda: np.asarray(features), lambda row: np.asarray(features[row])


def _sparse(folder: Path, interactions: bool) -> Reader:
    from scipy import sparse

    keys = _id_rows(folder, interactions)

    @functools.cache
    def features() -> Any:
        matrix = sparse.load_npz(folder / "features.npz").tocsr()
        _same_count(folder, len(keys), matrix.shape[0])
        return matrix

    return ([k.stem for k in keys], list(keys), lambda: features().toarray(),
            lambda row: features()[row].toarray().reshape(-1))


def _parquet(folder: Path, interactions: bool) -> Reader:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = folder / PARQUET_SHARDS
    parts = sorted(p for p in shards.iterdir() if PARQUET_PART.fullmatch(p.name)) if shards.is_dir() else []
    if not parts:
        return [], [], lambda: np.zeros((0,), np.float32), lambda row: np.zeros((0,), np.float32)
    columns = ["user", "item"] if interactions else ["id"]
    ids = pa.concat_tables([pq.read_table(p, columns=columns) for p in parts])  # the vectors are read when asked
    if interactions:
        keys = [RecordKey(i, u) for u, i in zip(ids.column("user").to_pylist(), ids.column("item").to_pylist())]
    else:
        keys = [RecordKey(i) for i in ids.column("id").to_pylist()]

    @functools.cache
    def matrix() -> np.ndarray:
        table = pa.concat_tables([pq.read_table(p, columns=["vector"]) for p in parts])
        shape = json.loads((table.schema.metadata or {}).get(b"ducho.shape", b"[]"))
        values = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(keys), *shape) if shape else values.reshape(len(keys), -1)

    return [k.stem for k in keys], list(keys), matrix, lambda row: matrix()[row]


def _same_count(folder: Path, ids: int, rows: int) -> None:
    if ids != rows:
        raise DuchoError(f"{folder}: ids.tsv lists {ids} ids for {rows} rows of features; the output is damaged, "
                         "run again with --overwrite")
