"""Incremental runs: when the input of a complete output changes, a run computes only the records added or changed
and keeps the vectors of the others.

Each layer folder keeps `records.tsv`, the file-name stem and input digest (`Source.digest`) of every record its
vectors were made from, written when the layer completes. A run with the same settings on another input first links
that complete output into `<layer>/.previous/` (hard links, so no copy, and the files the run then replaces stay
readable there); records whose digest is unchanged take their vectors from it, the others are computed; the folder
is removed when the layer completes, and a run killed before that finds it again. Outputs without `records.tsv`
(older runs), `format: sparse` (one CSR matrix) and extractors fitted on the corpus (TF-IDF: any change moves every
vector) are recomputed whole.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DuchoError
from .ids import RecordKey
from .writers import MANIFEST, PARQUET_PART, PARQUET_SHARDS, PREVIOUS, RECORDS, read_manifest, write_text


def write_records(folder: Path, entries: Iterable[tuple[str, str]]) -> None:
    """`records.tsv`: stem and digest of each record the layer's vectors were made from (atomic)."""
    write_text(folder / RECORDS, "stem\tdigest\n" + "".join(f"{stem}\t{digest}\n" for stem, digest in entries))


def read_records(folder: Path) -> dict[str, str] | None:
    """stem -> digest from `records.tsv`, None without one."""
    path = folder / RECORDS
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return dict(line.split("\t", 1) for line in lines if "\t" in line)  # type: ignore[misc]


@dataclass
class Changes:
    """What an incremental run found, against the previous output."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    seen: set[str] = field(default_factory=set)  # stems of the current input (for `removed`)

    def line(self) -> str:
        return f"{self.new} new, {self.changed} changed, {self.removed} removed, {self.unchanged} unchanged"

    def as_dict(self) -> dict[str, int]:
        return {"new": self.new, "changed": self.changed, "removed": self.removed, "unchanged": self.unchanged}


class Previous:
    """A layer's last complete output on another input (in `.previous`): its digests and its vectors by key."""

    def __init__(self, folder: Path, digests: dict[str, str]) -> None:
        self.folder, self.digests = folder, digests
        self._records = None

    @property
    def records(self):  # noqa: ANN201 - layer_files.Records, imported late (it imports the writers)
        if self._records is None:
            from .layer_files import Layer, open_records

            self._records = open_records(Layer(self.folder, read_manifest(self.folder) or {}, self.folder.name))
        return self._records

    def vectors(self, keys: Sequence[RecordKey]) -> list[np.ndarray]:
        """The stored vectors of `keys`, as written (dtype and shape)."""
        out = []
        for key in keys:
            row = self.records.row_of(key)
            if row is None:
                raise DuchoError(f"{self.folder}: {key.label} is listed in {RECORDS} but has no vector there")
            out.append(np.array(self.records.record(row)))
        return out

    def removed(self, seen: set[str]) -> list[str]:
        """Stems of the previous output's records that the current input no longer has."""
        return [stem for stem in self.digests if stem not in seen]

    def removed_keys(self, seen: set[str]) -> list[RecordKey]:
        """Keys of those records, in the previous output's row order (matrix, parquet)."""
        return [key for key in self.records.require_keys() if key.stem not in seen]


def open_previous(folder: Path, fmt: str, fingerprint: str, input_sha256: str) -> Previous | None:
    """The previous complete output of these settings on another input, linked into `.previous` (made now, or by
    a run killed before it completed); None when there is none to reuse."""
    snapshot = folder / PREVIOUS
    manifest = read_manifest(folder) or {}
    complete = manifest.get("status") == "complete" and manifest.get("fingerprint") == fingerprint
    if complete and manifest.get("input_sha256") == input_sha256:
        shutil.rmtree(snapshot, ignore_errors=True)  # left by a run killed after completing
        return None
    if complete and fmt != "sparse" and (folder / RECORDS).is_file():
        _link(folder, snapshot, fmt)
    previous = read_manifest(snapshot) if snapshot.is_dir() else None
    if previous is None or previous.get("fingerprint") != fingerprint:
        shutil.rmtree(snapshot, ignore_errors=True)
        return None
    digests = read_records(snapshot)
    return Previous(snapshot, digests) if digests is not None else None


def _link(folder: Path, snapshot: Path, fmt: str) -> None:
    """Hard-link the complete output's files into `snapshot` (built beside it, then renamed: all or nothing)."""
    names = [MANIFEST, RECORDS]
    if fmt == "matrix":
        names += ["features.npy", "ids.tsv"]
    elif fmt == "parquet":
        shards = folder / PARQUET_SHARDS
        names += [f"{PARQUET_SHARDS}/{p.name}" for p in sorted(shards.iterdir()) if PARQUET_PART.fullmatch(p.name)] \
            if shards.is_dir() else []
    building = folder / f"{PREVIOUS}.building"
    shutil.rmtree(building, ignore_errors=True)
    shutil.rmtree(snapshot, ignore_errors=True)
    for name in names:
        target = building / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(folder / name)
        except OSError:  # a file system without hard links
            shutil.copy2(folder / name, target)
    building.rename(snapshot)
