"""Record ids and the file names made from them.

Ids are percent-encoded into file names, so the mapping is one-to-one for single ids, no id can
reach outside its output folder, and `int`-like ids (the Elliot convention) stay as they are; `stem_id` and
`stem_key` decode a file name back to its id (`ducho export` reads `format: npy` outputs with them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import unquote

SAFE_PUNCTUATION = set("-_.,+=@!$&'()[]{}#")  # "~" marks shortened stems
MAX_STEM_BYTES = 200
PAIR_SEPARATOR = "__"


@dataclass(frozen=True, slots=True)
class RecordKey:
    """An item id, or the (user, item) pair of an interaction."""

    item: str
    user: str | None = None

    @property
    def label(self) -> str:
        """The id as the user wrote it, for reports."""
        return self.item if self.user is None else f"{self.user}{PAIR_SEPARATOR}{self.item}"

    @property
    def stem(self) -> str:
        """The file name (without extension): `<item>` or `<user>__<item>`."""
        stem = safe_stem(self.item) if self.user is None else \
            f"{safe_stem(self.user)}{PAIR_SEPARATOR}{safe_stem(self.item)}"
        return _shorten(stem)


def safe_stem(value: str) -> str:
    """Encode an id as a file-name stem: letters and digits of any script stay, `/`, `\\`, `%`,
    control characters and the like become `%XX`, and a leading dot is encoded (no `..`, no hidden files)."""
    out = []
    for index, ch in enumerate(value):
        if (ch.isalnum() or ch in SAFE_PUNCTUATION) and not (index == 0 and ch == "."):
            out.append(ch)
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
    return "".join(out) or "%"  # "%" alone is never produced by encoding


def _shorten(stem: str) -> str:
    if len(stem.encode("utf-8")) <= MAX_STEM_BYTES:
        return stem
    digest = hashlib.sha1(stem.encode("utf-8")).hexdigest()[:16]
    return stem.encode("utf-8")[:150].decode("utf-8", "ignore") + "~" + digest


def stem_id(stem: str) -> str | None:
    """The id `safe_stem` made `stem` from, or None where no id gives it (a shortened stem: its end is a digest)."""
    if stem == "%":
        return ""
    try:
        value = unquote(stem, errors="strict")
    except UnicodeDecodeError:
        return None
    return value if safe_stem(value) == stem else None


def stem_key(stem: str, interactions: bool) -> RecordKey | None:
    """The record key of a file stem (`<item>` or `<user>__<item>`); None where the stem is shortened, or splits
    into more than one valid pair (a user id ending, or an item id starting, with `_` or `__`)."""
    if not interactions:
        item = stem_id(stem)
        return None if item is None else RecordKey(item)
    keys = []
    start = stem.find(PAIR_SEPARATOR)
    while start >= 0:
        user, item = stem_id(stem[:start]), stem_id(stem[start + len(PAIR_SEPARATOR):])
        if user is not None and item is not None:
            keys.append(RecordKey(item, user))
        start = stem.find(PAIR_SEPARATOR, start + 1)
    return keys[0] if len(keys) == 1 else None
