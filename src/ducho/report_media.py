"""What the report shows for a record: a small inline JPEG thumbnail of its image, or a snippet of its text (or the
audio file's name), found from the input named in the layer's manifest; and the labels file (`--labels`)."""

from __future__ import annotations

import base64
import csv
import io
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .ids import PAIR_SEPARATOR
from .layer_files import Layer

log = logging.getLogger("ducho")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

THUMBNAIL = 64  # pixels, longer side
SNIPPET = 160  # characters


class Media:
    """Previews of records, shared by every layer made from the same input: `table` is the page's list of previews
    ({"img": base64 JPEG} or {"text": snippet}); `previews` gives each record's index in it."""

    def __init__(self) -> None:
        self.table: list[dict[str, str]] = []
        self._index: dict[tuple[str, str], int | None] = {}
        self._folders: dict[tuple[str, bool], dict[str, Path]] = {}

    def previews(self, layer: Layer, records: Iterable[tuple[str, str | None]]) -> list[int | None]:
        """For (item, user) records of `layer`: the index of each one's preview in `table`, or None."""
        records = list(records)
        try:
            source = _source(layer)
        except (OSError, KeyError, TypeError, ValueError):
            source = None
        if source is None:
            return [None] * len(records)
        kind, path = source
        keys = [_record_key(layer, item, user) for item, user in records]
        missing = {k for k in keys if (str(path), k) not in self._index}
        if missing:
            found = self._read(kind, path, layer, missing)
            for key in missing:
                preview = found.get(key)
                self._index[(str(path), key)] = len(self.table) if preview else None
                if preview:
                    self.table.append(preview)
        return [self._index[(str(path), k)] for k in keys]

    def _read(self, kind: str, path: Path, layer: Layer, keys: set[str]) -> dict[str, dict[str, str]]:
        if kind == "text":
            return {k: {"text": v} for k, v in _texts(path, layer, keys).items()}
        files = self._files(path, layer, keys)
        if kind == "audio":
            return {k: {"text": f"audio: {p.name}"} for k, p in files.items()}
        out = {}
        for key, file in files.items():
            image = thumbnail(file)
            out[key] = {"img": image} if image else {"text": f"image: {file.name}"}
        return out

    def _files(self, path: Path, layer: Layer, keys: set[str]) -> dict[str, Path]:
        """Record key -> media file: the folder's files by id (file name less its extension), or the mapping TSV's
        file per user__item (interactions)."""
        settings = layer.manifest.get("source_settings") or {}
        mapping = settings.get("mapping_path")
        if layer.interactions and mapping:
            return {k: v for k, v in _mapping(_base(layer) / mapping, path, settings).items() if k in keys}
        recursive = bool(settings.get("recursive"))
        cached = self._folders.get((str(path), recursive))
        if cached is None:
            files = sorted(path.rglob("*") if recursive else path.iterdir())
            cached = {}
            for file in files:
                if file.is_file():
                    cached.setdefault(file.relative_to(path).with_suffix("").as_posix(), file)
            self._folders[(str(path), recursive)] = cached
        return {k: cached[k] for k in keys if k in cached}


def _record_key(layer: Layer, item: str, user: str | None) -> str:
    return f"{user}{PAIR_SEPARATOR}{item}" if layer.interactions and user is not None else item


def _base(layer: Layer) -> Path:
    """The run's dataset_path: the manifest's absolute input less its relative input_path."""
    settings = layer.manifest.get("source_settings") or {}
    relative = settings.get("input_path")
    if isinstance(relative, dict):
        relative = relative.get("visual")
    absolute = Path(str(layer.manifest.get("input", "")))
    parts = Path(str(relative or "")).parts
    if parts and absolute.parts[-len(parts):] == parts:
        return Path(*absolute.parts[:-len(parts)]) if len(absolute.parts) > len(parts) else Path(".")
    return absolute.parent


def _source(layer: Layer) -> tuple[str, Path] | None:
    """(text | image | audio, the input file or folder) of a layer, from its manifest."""
    manifest = layer.manifest
    modality = manifest.get("modality")
    if not manifest.get("input"):
        return None
    if modality == "visual_textual" and layer.modality == "textual":
        textual = (manifest.get("source_settings") or {}).get("input_path", {}).get("textual")
        return ("text", _base(layer) / textual) if textual else None
    kind = {"textual": "text", "visual": "image", "audio": "audio", "visual_textual": "image"}.get(str(modality))
    path = Path(str(manifest["input"]))
    if kind is None or not path.exists():
        return None
    return kind, path


def _column(header: list[str], name: Any, default: int) -> int:
    if isinstance(name, str) and name in header:
        return header.index(name)
    return default if -len(header) <= default < len(header) else 0


def _texts(path: Path, layer: Layer, keys: set[str]) -> dict[str, str]:
    """Snippets of the TSV rows whose id (item, or user__item) is in `keys`, read in one streaming pass."""
    settings = layer.manifest.get("source_settings") or {}
    out: dict[str, str] = {}
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = [h.strip() for h in next(rows, [])]
        if not header:
            return out
        interactions = layer.interactions
        item = _column(header, settings.get("item_column"), 1 if interactions else 0)
        user = _column(header, settings.get("user_column"), 0)
        columns = settings.get("text_column")
        columns = columns if isinstance(columns, list) else [columns] if columns else [None]
        texts = [_column(header, c, len(header) - 1) for c in columns]
        for row in rows:
            if len(row) <= max(item, user, *texts):
                continue
            key = f"{row[user]}{PAIR_SEPARATOR}{row[item]}" if interactions else row[item]
            if key in keys and key not in out:
                text = " ".join(row[t] for t in texts).strip()
                out[key] = text if len(text) <= SNIPPET else text[:SNIPPET - 1] + "…"
    return out


def _mapping(path: Path, folder: Path, settings: dict[str, Any]) -> dict[str, Path]:
    """user__item -> file, from an interactions mapping TSV (columns: file, user, item unless named)."""
    out: dict[str, Path] = {}
    if not path.is_file():
        return out
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = [h.strip() for h in next(rows, [])]
        file, user, item = (_column(header, settings.get(f"{name}_column"), default)
                            for name, default in (("file", 0), ("user", 1), ("item", 2)))
        for row in rows:
            if len(row) > max(file, user, item):
                out.setdefault(f"{row[user]}{PAIR_SEPARATOR}{row[item]}", folder / row[file])
    return out


def thumbnail(path: Path, size: int = THUMBNAIL) -> str | None:
    """A base64 JPEG of the image at most `size` pixels on its longer side (None when Pillow cannot read it)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale
            image = image.convert("RGBA") if image.mode in ("P", "LA", "PA") else image
            if image.mode == "RGBA":
                white = Image.new("RGB", image.size, "white")
                white.paste(image, mask=image.getchannel("A"))
                image = white
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=70, optimize=True)
    except (OSError, ValueError, SyntaxError) as error:
        log.debug("report: no thumbnail for %s: %s", path, error)
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def read_labels(path: str | Path, column: str | None = None) -> dict[str, str]:
    """id -> label from a TSV (or .csv) with a header: ids in the first column (or one named id/item/item_id),
    labels in `column` (default: the last column). Empty labels are left out."""
    return dict(_label_rows(Path(path), column))


class Labels:
    """A labels file (as `read_labels` reads it) kept on disk: a catalogue's labels can be as many as its records, so
    only the labels asked for are read, in one pass each."""

    def __init__(self, path: str | Path, column: str | None = None) -> None:
        self.path, self.column = Path(path), column
        self.count = sum(1 for _ in _label_rows(self.path, column))  # checks the header too

    def of(self, ids: Iterable[str]) -> dict[str, str]:
        """id -> label for those of `ids` that have one."""
        wanted = set(ids)
        return {record: label for record, label in _label_rows(self.path, self.column) if record in wanted}


def _label_rows(path: Path, column: str | None) -> Iterator[tuple[str, str]]:
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        rows = csv.reader(handle, delimiter=delimiter)
        header = [h.strip() for h in next(rows, [])]
        if len(header) < 2:
            raise ValueError(f"{path}: labels need a header with an id column and a label column")
        if column is not None and column not in header:
            raise ValueError(f"{path}: no column {column!r}; columns: {', '.join(header)}")
        label = header.index(column) if column is not None else len(header) - 1
        ident = next((header.index(n) for n in ("id", "item", "item_id") if n in header and n != column), 0)
        for row in rows:
            if len(row) > max(ident, label) and row[label].strip():
                yield row[ident], row[label].strip()


def label_of(labels: dict[str, str], record: str, item: str) -> str | None:
    """A record's label: by its id, else (interactions) by its item."""
    return labels.get(record, labels.get(item))
