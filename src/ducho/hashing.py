"""sha256 of files (inputs, weights), read in blocks so a large file never sits in memory; digests of records."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).expanduser().open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_digest(text: str) -> str:
    """A record's text, as 16 hex digits of its sha256."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def file_digest(path: str | Path, name: str) -> str:
    """A media file's `name` (where it sits in the input), size and modification time, as 16 hex digits: changed
    when the file is, as make and rsync tell (the file is not read); a copy that does not keep times changes it."""
    stat = os.stat(path)
    return text_digest(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
