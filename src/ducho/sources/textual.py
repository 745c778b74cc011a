"""The Textual Dataset: a TSV with a header, one text per item (items) or per user-item pair (interactions).

Reading happens in two streaming passes so memory does not grow with the texts: `scan` decides which
rows are extracted (duplicate-id policy, malformed rows) keeping one byte per row, and `records`
streams the kept rows.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config.schema import TextModelSpec, TextualSource
from ..errors import ConfigError, DuchoError, did_you_mean
from ..hashing import file_sha256, text_digest
from ..ids import RecordKey
from ..preprocess.text import clear_text
from .base import Record, Skip

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Columns:
    """Header positions of the id column(s) and the text column(s)."""

    item: int
    text: tuple[int, ...]
    user: int | None = None


@dataclass
class Scan:
    """Result of the first pass: which rows to extract and which were skipped."""

    rows: int = 0
    keep: bytearray = field(default_factory=bytearray)
    skipped: list[Skip] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return sum(self.keep)


class TextTable:
    """One TSV input of the textual modality."""

    def __init__(self, path: Path, settings: TextualSource, source: str, where: str) -> None:
        self.path = path
        self.settings = settings
        self.source = source
        if not path.is_file():
            raise ConfigError(f"{where}.input_path: {str(path)!r} is not a file")
        self.header = self._read_header()
        self.columns = self._resolve_columns(where)

    def _open(self):
        return self.path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")

    def _read_header(self) -> list[str]:
        with self._open() as handle:
            header = next(csv.reader(handle, delimiter="\t"), None)
        if not header:
            raise DuchoError(f"{self.path}: the TSV is empty; it needs a header row")
        return [name.strip() for name in header]

    def _resolve_columns(self, where: str) -> Columns:
        s = self.settings
        interactions = self.source == "interactions"
        needed = 3 if interactions else 2
        if len(self.header) < needed and (s.text_column is None or s.item_column is None):
            raise DuchoError(f"{self.path}: {len(self.header)} column(s) {self.header}; {self.source} need at "
                             f"least {needed} (ids and text) or explicit column names")
        texts = s.text_column if isinstance(s.text_column, list) else [s.text_column] if s.text_column else None
        text = tuple(self._position(c, f"{where}.text_column") for c in texts) if texts else (len(self.header) - 1,)
        if interactions:
            user = self._position(s.user_column, f"{where}.user_column") if s.user_column else 0
            item = self._position(s.item_column, f"{where}.item_column") if s.item_column else 1
            return Columns(item=item, text=text, user=user)
        item = self._position(s.item_column, f"{where}.item_column") if s.item_column else 0
        return Columns(item=item, text=text)

    def _position(self, name: str, key: str) -> int:
        if name in self.header:
            return self.header.index(name)
        raise ConfigError(f"{key}: column {name!r} is not in {self.path.name}; columns: "
                          f"{', '.join(self.header)}{did_you_mean(name, self.header)}")

    def _rows(self) -> Iterator[list[str]]:
        """Data rows after the header; blank lines are not records."""
        with self._open() as handle:
            reader = csv.reader(handle, delimiter="\t")
            next(reader, None)
            yield from (row for row in reader if row)

    def _key(self, row: list[str]) -> RecordKey:
        c = self.columns
        return RecordKey(item=row[c.item].strip(), user=row[c.user].strip() if c.user is not None else None)

    def _problem(self, row: list[str]) -> str | None:
        if len(row) != len(self.header):
            return f"malformed row: {len(row)} fields, the header has {len(self.header)}"
        if any("\udc80" <= ch <= "\udcff" for value in row for ch in value):
            return "invalid UTF-8"
        key = self._key(row)
        if not key.item or key.user == "":
            return "missing id"
        return None

    def scan(self) -> Scan:
        """First pass: mark the rows to extract; duplicates follow `duplicate_ids`."""
        result = Scan()
        first_row: dict[RecordKey, int] = {}
        stems: dict[str, RecordKey] = {}
        duplicates: dict[RecordKey, list[int]] = {}
        for index, row in enumerate(self._rows()):
            result.rows += 1
            problem = self._problem(row)
            result.keep.append(problem is None)
            if problem:
                label = self._key(row).label if len(row) > max(self.columns.item, self.columns.user or 0) else "?"
                result.skipped.append(Skip(label, self._origin(index), problem))
                continue
            key = self._key(row)
            if key in first_row:
                duplicates.setdefault(key, [first_row[key]]).append(index)
                continue
            first_row[key] = index
            clash = stems.setdefault(key.stem, key)
            if clash != key:
                raise DuchoError(f"{self.path.name}: ids {clash.label!r} and {key.label!r} would be written to the "
                                 f"same file {key.stem}.npy; rename one of them")
        self._apply_duplicate_policy(result, duplicates)
        return result

    def _apply_duplicate_policy(self, result: Scan, duplicates: dict[RecordKey, list[int]]) -> None:
        policy = self.settings.duplicate_ids
        for key, indexes in duplicates.items():
            winner = {"first": indexes[0], "last": indexes[-1], "skip_all": None}[policy]
            for index in indexes:
                if index == winner:
                    continue
                result.keep[index] = False
                reason = f"duplicate id ({len(indexes)} rows; duplicate_ids: {policy}"
                reason += ", kept one)" if winner is not None else ", none kept)"
                result.skipped.append(Skip(key.label, self._origin(index), reason))

    def records(self, scan: Scan, spec: TextModelSpec) -> Iterator[Record | Skip]:
        """Second pass: the kept rows in file order, their text (several text columns joined by a space) cleaned
        as `spec` asks; an empty text is a Skip unless `empty_text: encode`."""
        for index, row in enumerate(self._rows()):
            if not scan.keep[index]:
                continue
            raw = " ".join(row[i].strip() for i in self.columns.text if row[i].strip())
            text = clear_text(raw) if spec.clear_text else raw
            key = self._key(row)
            if not text.strip() and self.settings.empty_text == "skip":
                yield Skip(key.label, self._origin(index), "empty text" + (" after clear_text" if raw else ""))
            else:
                yield Record(key, self._origin(index), text)

    def keys(self, scan: Scan) -> Iterator[tuple[RecordKey, str]]:
        """The key and origin of every kept row, in file order (no text read)."""
        for index, row in enumerate(self._rows()):
            if scan.keep[index]:
                yield self._key(row), self._origin(index)

    def fingerprint(self, scan: Scan) -> str:
        """sha256 of the TSV file."""
        return file_sha256(self.path)

    def digest(self, record: Record) -> str:
        """sha256 of the record's text, as the model gets it."""
        return text_digest(record.payload)

    def _origin(self, index: int) -> str:
        return f"{self.path.name}: row {index + 1}"
