"""`output_path: <URI>` (`s3://bucket/prefix`, `gs://`, `hdfs://`, `abfs://`, any fsspec protocol), format parquet
only: the job writes a staging folder under `dataset_path` (`.ducho-staging/`), exactly as a local output (so resume,
incremental runs and failures work the same), and copies each Parquet part to the URI as soon as its shard is
written; manifests, `records.tsv` and `failures.tsv` follow when the job completes, and parts the output no longer
has (another input's) are removed there. pyarrow's file systems serve the URIs they know (S3, GCS, HDFS, Azure,
file), fsspec's the others. An object store commits an object when its upload completes, so a reader never sees half a
part. The staging folder keeps a copy of what was uploaded (a later run resumes from it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .errors import DuchoError
from .writers import MANIFEST, PARQUET_PART, PARQUET_SHARDS, RECORDS, is_temporary

STAGING = ".ducho-staging"


def is_uri(value: str) -> bool:
    return "://" in value


def open_uri(uri: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path in it) for `uri`: pyarrow's own file systems first, then fsspec's."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as pyarrow_error:  # not a scheme pyarrow knows (ArrowInvalid), or its client failed
        try:
            import fsspec

            filesystem, path = fsspec.core.url_to_fs(uri)
        except Exception as error:
            raise DuchoError(f"output_path {uri!r}: no file system for it (pyarrow: {pyarrow_error}; fsspec: "
                             f"{error})") from error
        return fs.PyFileSystem(fs.FSSpecHandler(filesystem)), path


class Mirror:
    """The URI a job's staging folder is copied to."""

    def __init__(self, uri: str, staging: Path) -> None:
        self.uri, self.staging = uri.rstrip("/"), staging
        self.fs, self.root = open_uri(self.uri)
        try:
            self.fs.create_dir(self.root, recursive=True)
        except Exception as error:  # unreachable, no credentials, no permission: before any work
            raise DuchoError(f"output_path {uri!r}: cannot write there: {error}") from error

    def put(self, local: Path) -> None:
        """Copy one file of the staging folder to the same place under the URI (unless it is there, same size)."""
        relative = local.relative_to(self.staging).as_posix()
        target = f"{self.root}/{relative}"
        info = self.fs.get_file_info(target)
        if f"/{PARQUET_SHARDS}/" in relative and info.size == local.stat().st_size:
            return  # a part is immutable once written: same name and size is the same part
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with local.open("rb") as source, self.fs.open_output_stream(target) as sink:
            shutil.copyfileobj(source, sink, 1 << 22)

    def sync(self, layers: list[Path], failures: Path) -> None:
        """At the end of the job: every part, records.tsv and the manifest of each layer (manifest last), the
        failures, and no part the layer no longer has."""
        from pyarrow import fs

        for folder in layers:
            shards = folder / PARQUET_SHARDS
            parts = sorted(p for p in shards.iterdir() if PARQUET_PART.fullmatch(p.name)) if shards.is_dir() else []
            for part in parts:
                self.put(part)
            remote = f"{self.root}/{folder.relative_to(self.staging).as_posix()}/{PARQUET_SHARDS}"
            keep = {p.name for p in parts}
            for info in self.fs.get_file_info(fs.FileSelector(remote, allow_not_found=True)):
                name = info.path.rsplit("/", 1)[-1]
                if PARQUET_PART.fullmatch(name) and name not in keep:
                    self.fs.delete_file(info.path)
            for name in (RECORDS, MANIFEST):
                if (folder / name).is_file() and not is_temporary(name):
                    self.put(folder / name)
        if failures.is_file():
            self.put(failures)
