"""Text cleaning (`clear_text`): punctuation, digits and symbols go; letters of every script stay."""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHE_OUTSIDE_WORD = re.compile(r"(?<![^\W\d_])['\u2019]|['\u2019](?![^\W\d_])")
_SPACES = re.compile(r"\s+")


class _KeepLetters(dict):
    """A `str.translate` table built lazily: letters and combining marks stay, the rest becomes a space."""

    def __missing__(self, code: int) -> int:
        ch = chr(code)
        keep = unicodedata.category(ch)[0] in "LM" or ch in "'\u2019"
        self[code] = code if keep else 32
        return self[code]


_TABLE = _KeepLetters()


def clear_text(text: str) -> str:
    """Return `text` with only letters (any script), combining marks and in-word apostrophes, single-spaced."""
    cleaned = unicodedata.normalize("NFC", text).translate(_TABLE)
    cleaned = _APOSTROPHE_OUTSIDE_WORD.sub(" ", cleaned)
    return _SPACES.sub(" ", cleaned).strip()
