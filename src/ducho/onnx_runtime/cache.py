"""The graph cache: one folder per key under `$DUCHO_CACHE/onnx` (default `~/.cache/ducho/onnx`), each written
whole into a temporary folder and renamed into place, so a killed export never leaves a half-written graph where a
later run would find it; every file's sha256 is recorded and checked on use, and a damaged entry is rebuilt."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hashing import file_sha256

log = logging.getLogger("ducho")

CACHE_ENV = "DUCHO_CACHE"
ENTRY_FILE = "entry.json"
GRAPH_FILE = "model.onnx"
STALE_SECONDS = 6 * 3600  # a temporary folder this old belongs to a killed export


def cache_root() -> Path:
    """`$DUCHO_CACHE/onnx`, else `~/.cache/ducho/onnx`."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/ducho").expanduser() / "onnx"


def digest(parts: dict[str, Any]) -> str:
    """A short stable key for JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    """A complete cache entry: the graph file, its sha256 and what made it."""

    folder: Path
    sha256: str
    facts: dict[str, Any]
    built: bool
    """True when this run wrote it, False when it was found."""

    @property
    def graph(self) -> Path:
        return self.folder / GRAPH_FILE


def _hashes(folder: Path) -> dict[str, str]:
    return {path.name: file_sha256(path) for path in sorted(folder.iterdir()) if path.name != ENTRY_FILE}


def lookup(key: str, root: Path | None = None) -> Entry | None:
    """The entry of `key` when it is complete and unchanged; a damaged one is removed (it is then rebuilt)."""
    folder = (root or cache_root()) / key
    if not folder.is_dir():
        return None
    try:
        recorded = json.loads((folder / ENTRY_FILE).read_text())
        if recorded["files"] != _hashes(folder) or GRAPH_FILE not in recorded["files"]:
            raise ValueError("a file's sha256 differs from the one recorded")
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("onnx cache: entry %s is damaged (%s); removing it and exporting again", folder, error)
        _remove(folder)
        return None
    return Entry(folder, recorded["files"][GRAPH_FILE], recorded["facts"], built=False)


def store(key: str, build: Callable[[Path], dict[str, Any]], root: Path | None = None) -> Entry:
    """Build an entry: `build(graph_path)` writes the graph (and any file beside it) in a temporary folder and
    returns its facts; the folder is renamed to its key only once complete."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    _clear_stale(root)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    try:
        facts = build(temporary / GRAPH_FILE)
        files = _hashes(temporary)
        (temporary / ENTRY_FILE).write_text(json.dumps({"key": key, "files": files, "facts": facts}, indent=1,
                                                       default=str))
        try:
            os.rename(temporary, root / key)
        except OSError:  # another run put the same entry in place first: keep theirs
            found = lookup(key, root)
            if found is None:
                raise
            return found
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return Entry(root / key, files[GRAPH_FILE], facts, built=True)


def _remove(folder: Path) -> None:
    """Move out of the way first (a reader never sees a half-removed entry), then delete."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _clear_stale(root: Path) -> None:
    now = time.time()
    for path in root.glob(".t*-*"):
        try:
            if path.is_dir() and now - path.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue
