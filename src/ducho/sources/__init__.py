"""Sources list the records of one modality and source (items or interactions) without decoding them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Record, Skip, Source

if TYPE_CHECKING:
    from ..plan import Job

__all__ = ["Record", "Skip", "Source", "open_source"]


def open_source(job: Job) -> Source:
    """The Dataset of a job's modality and source (shared by every model of that source)."""
    if job.modality == "textual":
        from .textual import TextTable

        return TextTable(job.input_path, job.settings, job.source, job.source_key)
    if job.modality == "visual_textual":
        from .joint import ImageTextPairs

        return ImageTextPairs(job.input_path, job.text_path, job.settings, job.source, job.source_key, job.mapping_path)
    from .media import MediaFolder

    if job.modality == "visual":
        from ..media.image import IMAGE_SUFFIXES as suffixes
        kind = "image"
    else:
        from ..media.audio import AUDIO_SUFFIXES, OTHER_SUFFIXES
        suffixes, kind = AUDIO_SUFFIXES | OTHER_SUFFIXES, "audio"
    return MediaFolder(job.input_path, job.settings, job.source, job.source_key, suffixes, kind, job.mapping_path)
