"""What every source yields: records to extract and skips to report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
