"""The visual_textual Dataset: an image folder and a TSV of texts, joined by id (never by position).

A record's payload is `(image path, text)`. Ids with an image but no text, or a text but no image, are reported
as skipped. The order is the TSV's, so a shuffled TSV gives the same per-id vectors in another order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config.schema import JointModelSpec, JointSource, MediaSource
from ..hashing import file_digest, text_digest
from ..ids import RecordKey
from .base import Record, Skip
from .media import MediaFolder, MediaScan
from .textual import Scan, TextTable


@dataclass
class JointScan:
    text: Scan
    images: MediaScan
    paths: dict[RecordKey, str] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)
    kept: int = 0


class ImageTextPairs:
    """One visual_textual source: `MediaFolder` for the images and `TextTable` for the texts, joined by key."""

    def __init__(self, folder: Path, table: Path, settings: JointSource, source: str, where: str,
                 mapping: Path | None) -> None:
        from ..media.image import IMAGE_SUFFIXES

        self.texts = TextTable(table, settings, source, where)  # the same column and policy keys as textual
        image_settings = MediaSource(input_path=str(folder), output_path="-", recursive=settings.recursive,
                                     mapping_path=settings.mapping_path, duplicate_ids=settings.duplicate_ids)
        self.images = MediaFolder(folder, image_settings, source, where, IMAGE_SUFFIXES, "image", mapping)

    def scan(self) -> JointScan:
        scan = JointScan(self.texts.scan(), self.images.scan())
        scan.paths = {record.key: record.payload for record in scan.images.records}
        scan.skipped = [*scan.text.skipped, *scan.images.skipped]
        with_text = set()
        for key, origin in self.texts.keys(scan.text):
            with_text.add(key)
            if key in scan.paths:
                scan.kept += 1
            else:
                scan.skipped.append(Skip(key.label, origin, "no image with this id"))
        scan.skipped += [Skip(r.key.label, r.origin, f"no text with this id in {self.texts.path.name}")
                         for r in scan.images.records if r.key not in with_text]
        return scan

    def records(self, scan: JointScan, spec: JointModelSpec) -> Iterator[Record | Skip]:
        for entry in self.texts.records(scan.text, spec):
            if isinstance(entry, Skip):
                yield entry
            elif entry.key in scan.paths:
                yield Record(entry.key, entry.origin, (scan.paths[entry.key], entry.payload))

    def digest(self, record: Record) -> str:
        """The image file's digest and the text's."""
        path, text = record.payload
        return f"{file_digest(path, Path(path).name)}{text_digest(text)}"

    def fingerprint(self, scan: JointScan) -> str:
        both = f"{self.texts.fingerprint(scan.text)}:{self.images.fingerprint(scan.images)}"
        return hashlib.sha256(both.encode()).hexdigest()
