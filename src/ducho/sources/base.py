"""What every source yields: records to extract and skips to report."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..ids import RecordKey


@dataclass(frozen=True, slots=True)
class Record:
    """One input to extract: its key, where it came from, and its payload (a text, a file path...)."""

    key: RecordKey
    origin: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Skip:
    """A record that was not extracted, and why."""

    label: str
    origin: str
    reason: str


class Source(Protocol):
    """A Dataset: `scan` once per source decides what is extracted; `records` streams it for one model."""

    def scan(self) -> Any:
        """List what will be extracted (and the skips); cheap, no decoding."""

    def records(self, scan: Any, spec: Any) -> Iterator[Record | Skip]:
        """The records of `scan` in a stable order, prepared as `spec` asks (e.g. text cleaning)."""

    def fingerprint(self, scan: Any) -> str:
        """Changes whenever the input changes; a complete output of another fingerprint is redone."""

    def digest(self, record: Record) -> str:
        """Changes whenever this record's input changes (an incremental run recomputes the records whose digest
        changed and keeps the others)."""
