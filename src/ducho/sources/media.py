"""Media Datasets (images, audio): a folder of files for items; for interactions, a folder plus a TSV that maps
each file to a user and an item.

An item's id is its file name without the LAST extension (`a.v2.jpg` -> `a.v2`); with `recursive: true` the
sub-folder is part of the id (`shoes/a`). Files that are not media are reported as skipped, never fatal.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config.schema import MediaSource
from ..errors import ConfigError, DuchoError, did_you_mean
from ..hashing import file_digest
from ..ids import RecordKey
from .base import Record, Skip


@dataclass
class MediaScan:
    """The files to extract (in a stable order) and the entries that were skipped."""

    records: list[Record] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return len(self.records)


class MediaFolder:
    """One folder input of the visual or audio modality."""

    def __init__(self, folder: Path, settings: MediaSource, source: str, where: str, suffixes: frozenset[str],
                 kind: str, mapping: Path | None = None) -> None:
        self.folder = folder
        self.settings = settings
        self.source = source
        self.where = where
        self.suffixes = suffixes
        self.kind = kind  # 'image' or 'audio', for messages
        self.mapping = mapping
        if not folder.is_dir():
            raise ConfigError(f"{where}.input_path: {str(folder)!r} is not a folder")
        if source == "interactions":
            if mapping is None:
                raise ConfigError(f"{where}.mapping_path: interactions need a TSV mapping each file to a user and "
                                  "an item (columns: file, user, item)")
            if not mapping.is_file():
                raise ConfigError(f"{where}.mapping_path: {str(mapping)!r} is not a file")

    def scan(self) -> MediaScan:
        return self._scan_mapping() if self.source == "interactions" else self._scan_folder()

    def records(self, scan: MediaScan, spec: object = None) -> Iterator[Record | Skip]:
        yield from scan.records

    def fingerprint(self, scan: MediaScan) -> str:
        """Changes when a kept file is added, removed, resized or touched, or when the mapping changes."""
        digest = hashlib.sha256()
        for record in scan.records:
            stat = os.stat(record.payload)
            digest.update(f"{record.key.label}\t{record.payload}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        if self.mapping is not None:
            digest.update(self.mapping.read_bytes())
        return digest.hexdigest()

    def digest(self, record: Record) -> str:
        """The file's path in the input folder, size and modification time (as make and rsync tell a changed
        file); not its line in a mapping, which moves when lines are added above it."""
        return file_digest(record.payload, os.path.relpath(record.payload, self.folder))

    # items ---------------------------------------------------------------------------------------------------
    def _scan_folder(self) -> MediaScan:
        scan = MediaScan()
        owners: dict[str, Path] = {}
        stems: dict[str, str] = {}
        for path in self._walk(self.folder, scan):
            relative = path.relative_to(self.folder)
            item = relative.with_suffix("").as_posix()
            if item in owners:
                raise DuchoError(f"{self.where}: {owners[item].name} and {path.name} would both be item {item!r}; "
                                 "rename or remove one of them")
            owners[item] = path
            key = RecordKey(item)
            if stems.setdefault(key.stem, item) != item:
                raise DuchoError(f"{self.where}: items {stems[key.stem]!r} and {item!r} would be written to the same "
                                 f"file {key.stem}.npy; rename one of them")
            scan.records.append(Record(key, relative.as_posix(), str(path)))
        return scan

    def _walk(self, folder: Path, scan: MediaScan) -> Iterator[Path]:
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            relative = entry.relative_to(self.folder).as_posix()
            if entry.is_dir():
                if self.settings.recursive:
                    yield from self._walk(entry, scan)
                else:
                    scan.skipped.append(Skip(relative, relative, "sub-folder (set recursive: true to include it)"))
            elif entry.suffix.lower() in self.suffixes:
                yield entry
            else:
                scan.skipped.append(Skip(relative, relative, self._not_media(entry)))

    def _not_media(self, path: Path) -> str:
        suffix = path.suffix.lower() or "no extension"
        return f"not {'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} file ({suffix}); " \
               f"read: {' '.join(sorted(self.suffixes))}"

    # interactions --------------------------------------------------------------------------------------------
    def _scan_mapping(self) -> MediaScan:
        assert self.mapping is not None
        scan = MediaScan()
        rows: dict[RecordKey, list[tuple[int, str]]] = {}
        with self.mapping.open("r", encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = [name.strip() for name in next(reader, [])]
            file_at, user_at, item_at = self._mapping_columns(header)
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                origin = f"{self.mapping.name}: line {number}"
                if len(row) != len(header):
                    scan.skipped.append(Skip("?", origin, f"malformed row: {len(row)} fields, the header has "
                                                          f"{len(header)}"))
                    continue
                key = RecordKey(row[item_at].strip(), row[user_at].strip())
                name = row[file_at].strip()
                problem = self._file_problem(name, key)
                if problem:
                    scan.skipped.append(Skip(key.label, origin, problem))
                    continue
                rows.setdefault(key, []).append((number, name))
        self._keep_by_policy(rows, scan)
        return scan

    def _mapping_columns(self, header: list[str]) -> tuple[int, int, int]:
        if len(header) < 3 and None in (self.settings.file_column, self.settings.user_column,
                                        self.settings.item_column):
            raise DuchoError(f"{self.mapping}: {len(header)} column(s) {header}; the mapping needs a file name, "
                             "a user and an item column")
        positions = []
        for key, default in (("file_column", 0), ("user_column", 1), ("item_column", 2)):
            name = getattr(self.settings, key)
            if name is None:
                positions.append(default)
            elif name in header:
                positions.append(header.index(name))
            else:
                raise ConfigError(f"{self.where}.{key}: column {name!r} is not in {self.mapping.name}; columns: "
                                  f"{', '.join(header)}{did_you_mean(name, header)}")
        return positions[0], positions[1], positions[2]

    def _file_problem(self, name: str, key: RecordKey) -> str | None:
        if not key.item or not key.user:
            return "missing id"
        if not name:
            return "missing file name"
        path = (self.folder / name).resolve()
        if not path.is_relative_to(self.folder.resolve()):
            return f"file {name!r} is outside the input folder"
        if not path.is_file():
            return f"file {name!r} not found in {self.folder}"
        if path.suffix.lower() not in self.suffixes:
            return self._not_media(path)
        return None

    def _keep_by_policy(self, rows: dict[RecordKey, list[tuple[int, str]]], scan: MediaScan) -> None:
        policy = self.settings.duplicate_ids
        stems: dict[str, RecordKey] = {}
        for key, found in rows.items():
            if stems.setdefault(key.stem, key) != key:
                raise DuchoError(f"{self.mapping.name}: pairs {stems[key.stem].label!r} and {key.label!r} would be "
                                 f"written to the same file {key.stem}.npy; rename one of them")
            winner = {"first": 0, "last": len(found) - 1, "skip_all": None}[policy] if len(found) > 1 else 0
            for index, (number, name) in enumerate(found):
                origin = f"{self.mapping.name}: line {number}"
                if index == winner:
                    scan.records.append(Record(key, origin, str(self.folder / name)))
                else:
                    kept = ", kept one)" if winner is not None else ", none kept)"
                    scan.skipped.append(Skip(key.label, origin, f"duplicate pair ({len(found)} rows; duplicate_ids: "
                                                                f"{policy}{kept}"))
