"""The Runner: walks the plan (modality -> source -> model), builds each model once, streams its records
through decoding (worker processes, started before the build where possible) -> prepare (background thread) -> one
forward for every layer -> writers (background thread)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import __version__
from . import shards as sharding
from .backends.base import Extractor, Layer
from .backends.registry import build_extractor, check_model, early_loader
from .config.load import load_config, translation_notes
from .config.schema import Config
from .device import resolve_device
from .errors import StrictModeError
from .incremental import Changes, open_previous, write_records
from .loading import DecodeStream, Decoding, plan_decoding
from .logs import run_log
from .plan import Job, build_plan
from .remote import Mirror
from .shards import Batch, Extracted, batches, extract, loaded, prepare, shard_records
from .sources import Source, open_source
from .sources.base import Record, Skip
from .streams import WriteQueue, prefetch
from .writers import (
    PARQUET_SHARDS,
    PREVIOUS,
    LayerWriter,
    atomic_write,
    open_writer,
    part_name,
    remove_temporaries,
    write_failures,
    write_manifest,
)

log = logging.getLogger("ducho")

@dataclass
class JobResult:
    key: str
    model: str
    output_dir: Path
    counts: dict[str, int]
    extracted: int = 0
    resumed: int = 0
    skipped: list[Skip] = field(default_factory=list)
    seconds: float = 0.0
    load_seconds: float = 0.0  # building the model (included in `seconds`)


@dataclass
class RunResult:
    jobs: list[JobResult]
    log_file: Path | None


def run(config: Config | str | Path | dict, overrides: list[str] | tuple[str, ...] = (), *,
        overwrite: bool | None = None, progress: bool = True) -> RunResult:
    """Run every job of `config` (a Config, a YAML path or a mapping) and return what was written."""
    config = config if isinstance(config, Config) and not overrides else load_config(config, overrides)
    if overwrite is not None:
        config = config.model_copy(update={"overwrite": overwrite})
    jobs = build_plan(config)
    for job in jobs:  # a missing model fails before any work, with the places tried
        check_model(job.modality, job.backend, job.spec)
    with run_log(Path(config.dataset_path) / config.log_dir, config) as log_file:
        for note in translation_notes(config):
            log.info("config translated: %s", note)
        # on Ray each model actor resolves the device on its own node
        device = resolve_device(config.device, config.device_fallback_to_cpu) if config.executor == "local" \
            else config.device
        log.info("device: %s; %d job(s)", device, len(jobs))
        sources: dict[str, tuple[Source, Any]] = {}
        results = []
        with ExitStack() as stack:
            execute = run_job
            if config.executor == "ray":  # imported only here: `ducho --help` and local runs never import ray
                from .ray_executor import RayExecutor

                executor = RayExecutor(config)
                stack.callback(executor.close)
                execute = executor.run_job
            for job in jobs:
                if job.source_key not in sources:  # scanned once, shared by every model of the source
                    source = open_source(job)
                    sources[job.source_key] = (source, source.scan())
                source, scan = sources[job.source_key]
                results.append(execute(job, source, scan, device, config, progress))
        if config.report:  # one HTML page on every layer under dataset_path (`ducho report`)
            from .report import write_report

            log.info("report: %s", write_report(config.dataset_path, Path(config.dataset_path) / "report.html"))
        return RunResult(results, log_file)


class JobOutputs:
    """A job's writers, manifests, failures and result, the same for every executor: opened once the extractor is
    built (manifests `running`), fed `Extracted` batches and shard ends, closed with the counts (`complete`)."""

    def __init__(self, job: Job, extractor: Extractor, source: Source, scan: Any, config: Config, device: str,
                 started: float) -> None:
        self.job, self.extractor, self.config, self.device, self.started = job, extractor, config, device, started
        self.source, self.scan = source, scan
        self.input_sha = source.fingerprint(scan)
        remove_temporaries(job.output_dir)  # a killed run's failures.tsv (each layer writer cleans its own folder)
        fingerprints = {layer.folder: _fingerprint(job, layer) for layer in extractor.layers}
        # an input changed since a complete run: only its added and changed records are computed (`incremental`),
        # unless a layer has no such output to take the others from, or the extractor learns from the whole corpus
        previous = {folder: None if config.overwrite or hasattr(extractor, "fit") else
                    open_previous(job.layer_dir(folder), job.format, fingerprint, self.input_sha)
                    for folder, fingerprint in fingerprints.items()}
        self.incremental = all(p is not None for p in previous.values())
        self.changes = Changes()
        self.shards = 0  # shards of the input (an incremental run with on_removed: keep adds one after them)
        # output_path a URI: what is written here (a staging folder) is copied there, part by part (`remote`)
        self.mirror = Mirror(job.output_uri, job.output_dir) if job.output_uri is not None else None
        self.writers = {folder: open_writer(job.format, job.layer_dir(folder), fingerprint, self.input_sha,
                                            config.overwrite, job.source == "interactions", job.dtype,
                                            previous[folder] if self.incremental else None)
                        for folder, fingerprint in fingerprints.items()}
        self.result = JobResult(job.key, job.spec.model_name, job.output_dir, {},
                                load_seconds=time.perf_counter() - started)
        self.sink = WriteQueue()
        self.extra: dict[str, Any] = {}  # executor facts for the manifest (e.g. the nodes that worked)
        for skip in scan.skipped:
            self.report(skip)
        for layer in extractor.layers:
            writer = self.writers[layer.folder]
            for name, content in getattr(extractor, "artifacts", dict)().items():
                atomic_write(writer.folder / name, lambda handle, data=content: handle.write(data))
            if not writer.complete:
                write_manifest(writer.folder, self._manifest(layer, "running", 0))

    def is_done(self, shard: int, records: list[Record]) -> bool:
        return all(w.is_done(shard, [r.key for r in records]) for w in self.writers.values())

    def plan_shard(self, shard: int, records: list[Record]) -> list[int] | None:
        """Positions of the shard's records to compute, None when the shard is done. On a changed input only the
        records added or changed are computed; the others' vectors are queued from the previous output now."""
        self.shards = max(self.shards, shard + 1)
        if not self.incremental:
            return None if self.is_done(shard, records) else list(range(len(records)))
        before = next(iter(self.writers.values())).previous.digests
        compute, keep = [], []
        for position, record in enumerate(records):
            stem = record.key.stem
            self.changes.seen.add(stem)
            digest = before.get(stem)
            if digest is None:
                self.changes.new += 1
            elif digest != self.source.digest(record):
                self.changes.changed += 1
            else:
                self.changes.unchanged += 1
                keep.append(position)
                continue
            compute.append(position)
        if self.is_done(shard, records):  # written by this run before it was killed
            return None
        if keep:
            for writer in self.writers.values():
                self.sink.submit(writer.keep, shard, keep, [records[p].key for p in keep])
        return compute

    def report(self, skip: Skip) -> None:
        _report(self.result, skip, self.config)

    def add(self, extracted: Extracted) -> None:
        """Report the batch's skips and queue its vectors for the writers (a background thread)."""
        for skip in extracted.skips:
            self.report(skip)
        for folder, arrays in extracted.layers.items():
            self.sink.submit(self.writers[folder].write, extracted.shard, extracted.positions, extracted.keys, arrays)
        self.result.extracted += len(extracted.keys)

    def end_shard(self, shard: int, size: int) -> None:
        for writer in self.writers.values():
            self.sink.submit(writer.end_chunk, shard, size)
            if self.mirror is not None:
                self.sink.submit(self._upload, writer, shard)

    def _upload(self, writer: LayerWriter, shard: int) -> None:
        part = writer.folder / PARQUET_SHARDS / part_name(shard)
        if part.is_file():  # none when every record of the shard failed
            self.mirror.put(part)

    def close(self) -> JobResult:
        """Wait for the writes, then the counts, `complete` manifests, failures.tsv and the summary line."""
        result, job = self.result, self.job
        self._removed()
        self.sink.close()
        records = self._records()
        for layer in self.extractor.layers:
            writer = self.writers[layer.folder]
            result.counts[layer.folder] = writer.finish()
            write_records(writer.folder, records)
            write_manifest(writer.folder, self._manifest(layer, "complete", result.counts[layer.folder],
                                                         len(result.skipped)))
            shutil.rmtree(writer.folder / PREVIOUS, ignore_errors=True)
        write_failures(job.output_dir / "failures.tsv", [(s.label, s.origin, s.reason) for s in result.skipped])
        if self.mirror is not None:
            self.mirror.sync([writer.folder for writer in self.writers.values()], job.output_dir / "failures.tsv")
            log.info("%s: copied to %s", job.key, job.output_uri)
        result.seconds = time.perf_counter() - self.started
        rate = result.extracted / result.seconds if result.seconds else 0.0
        truncated = self.extractor.describe().get("truncated_texts")
        log.info("%s: %d extracted, %d already done, %d skipped (failures.tsv), %.1f rec/s%s%s", job.key,
                 result.extracted, result.resumed, len(result.skipped), rate,
                 f"; truncated texts: {truncated}" if truncated is not None else "",
                 f"; input changed: {self.changes.line()}" if self.incremental else "")
        return result

    def _removed(self) -> None:
        """Records of the previous output the input no longer has: deleted, or with `on_removed: keep` left as
        they are (npy) or written after the input's rows, in their previous order (matrix, parquet)."""
        if not self.incremental:
            return
        previous = next(iter(self.writers.values())).previous
        removed = previous.removed(self.changes.seen)
        self.changes.removed = len(removed)
        if self.config.on_removed == "delete":
            for writer in self.writers.values():
                self.sink.submit(writer.remove, removed)
        elif removed and self.job.format != "npy":
            keys = previous.removed_keys(self.changes.seen)
            for writer in self.writers.values():
                self.sink.submit(writer.keep, self.shards, list(range(len(keys))), keys)
                self.sink.submit(writer.end_chunk, self.shards, len(keys))

    def _records(self) -> list[tuple[str, str]]:
        """(stem, input digest) of every record the outputs now hold, for the next run's `incremental` (one more
        pass over the source: texts are hashed again, files only stat-ed)."""
        skipped = {skip.label for skip in self.result.skipped}
        held = [(entry.key.stem, self.source.digest(entry)) for entry in self.source.records(self.scan, self.job.spec)
                if isinstance(entry, Record) and entry.key.label not in skipped]
        if self.incremental and self.config.on_removed == "keep":
            previous = next(iter(self.writers.values())).previous
            held += [(stem, previous.digests[stem]) for stem in previous.removed(self.changes.seen)]
        return held

    def _manifest(self, layer: Layer, status: str, count: int, failures: int = 0) -> dict[str, Any]:
        writer = self.writers[layer.folder]
        incremental = {"incremental": self.changes.as_dict()} if self.incremental and status == "complete" else {}
        return {**_manifest(self.job, layer, writer, self.extractor, self.config, self.input_sha, self.device, status,
                            count, failures), **(writer.describe() if status == "complete" else {}), **incremental,
                **self.extra}


def run_job(job: Job, source: Source, scan: Any, device: str, config: Config, progress: bool) -> JobResult:
    """The local executor: decoding in worker processes of this machine, the model in this process."""
    started = time.perf_counter()
    log.info("%s: %s (%s) on %s -> %s", job.key, job.spec.model_name, job.backend, job.input_path, job.output_dir)
    decoding = plan_decoding(config.workers, device)
    model = _Model()
    with ExitStack() as cleanup:  # the decoding workers stop whatever happens
        stream = _early_stream(job, source, scan, config, decoding, model)
        if stream is not None:
            cleanup.callback(stream.close)
        extractor = build_extractor(job.modality, job.backend, job.spec, device)
        fit(extractor, source, scan, job)
        log.info("%s: model loaded in %.1f s from %s", job.key, time.perf_counter() - started,
                 extractor.describe()["model"])
        outputs = JobOutputs(job, extractor, source, scan, config, device, started)
        model.extractor, model.outputs = extractor, outputs
        if extractor.loader is not None:
            log.info("%s: %d decoding worker(s) at nice %d%s", job.key, decoding.workers, decoding.nice,
                     ", started before the model was built" if stream is not None else "")
        if stream is not None and stream.loader != extractor.loader:  # not the loader expected: decode with its own
            stream.close()
            stream = None
        if stream is None:
            stream = DecodeStream(extractor.loader, _plan(job, source, scan, model), decoding)
            cleanup.callback(stream.close)
        bar = tqdm(total=scan.kept, desc=job.key, unit="rec", disable=not progress, dynamic_ncols=True)
        try:
            for event in prefetch(_events(stream, extractor)):
                kind = event[0]
                if kind == "skip":
                    outputs.report(event[1])
                    bar.update(1)
                elif kind == "done":
                    outputs.result.resumed += event[1]
                    bar.update(event[1])
                elif kind == "batch":
                    _, batch, items, prepared, skips = event
                    extracted = extract(extractor, job.spec.normalize, batch, items, prepared)
                    extracted.skips = [*skips, *extracted.skips]
                    outputs.add(extracted)
                    bar.update(len(batch.records) + len(skips))
                else:  # end of a shard
                    outputs.end_shard(event[1], event[2])
        finally:
            bar.close()
        return outputs.close()


def fit(extractor: Extractor, source: Source, scan: Any, job: Job) -> None:
    """An extractor that learns from the corpus (TF-IDF) is fitted on the whole source first (deterministic, so a
    resume refits the same)."""
    if hasattr(extractor, "fit"):
        extractor.fit(entry.payload for entry in source.records(scan, job.spec) if isinstance(entry, Record))


@dataclass
class _Model:
    """The job's extractor and outputs, once built (the plan may start before, see `_early_stream`)."""

    extractor: Extractor | None = None
    outputs: JobOutputs | None = None


def _plan(job: Job, source: Source, scan: Any, model: _Model) -> Iterator[Any]:
    """Read, cut into shards, pass over the shards already written, batch. Runs where the decoding takes more work;
    events: ("skip", Skip), ("done", count), `Batch`, ("end", shard, count)."""
    for index, records, skips in shard_records(source, scan, job.spec):
        yield from (("skip", s) for s in skips)
        if not records:
            continue
        if model.extractor is None or model.outputs is None:  # a fresh output, decoding before the model is built
            if index > 0:
                raise RuntimeError("the plan went past the first shard before the model was built")
            sort_key = None  # models with an early loader give every payload the same sort key
            todo = None
        else:
            todo = model.outputs.plan_shard(index, records)
            if todo is None or len(todo) < len(records):
                yield ("done", len(records) - len(todo or ()))
            if todo is None:
                continue
            sort_key = model.extractor.sort_key
        yield from batches(index, records, job.spec.batch_size, sort_key, todo)
        yield ("end", index, len(records))


def _early_stream(job: Job, source: Source, scan: Any, config: Config, decoding: Decoding,
                  model: _Model) -> DecodeStream | None:
    """Start decoding before the model is built, where its loader is known without it and nothing of the job is
    on disk yet (so no shard can be done): the first batches are then ready when the model is. With batches of at
    most half a shard, the workers' first pieces all come from the first shard."""
    if decoding.workers == 0 or job.spec.batch_size > sharding.SHARD // 2:
        return None
    if not config.overwrite and any(d.exists() for d in (job.output_dir, job.text_output_dir) if d is not None):
        return None
    loader = early_loader(job.modality, job.backend, job.spec)
    return DecodeStream(loader, _plan(job, source, scan, model), decoding) if loader is not None else None


def _events(stream: DecodeStream, extractor: Extractor) -> Iterator[tuple[Any, ...]]:
    """Runs in the prefetch thread: the plan's events, each batch loaded (worker processes) and prepared:
    ("batch", the batch cut to its decoded records, their items, prepared or the error, skips of the others)."""
    for event, items in stream:
        if not isinstance(event, Batch):
            yield event
            continue
        assert items is not None
        good, good_items, skips = loaded(event, items)
        if not good.records:
            yield from (("skip", skip) for skip in skips)
            continue
        yield ("batch", good, good_items, prepare(extractor, good_items), skips)


def _report(result: JobResult, skip: Skip, config: Config) -> None:
    result.skipped.append(skip)
    log.warning("%s: skipped %s (%s): %s", result.key, skip.label, skip.origin, skip.reason)
    if config.strict:
        raise StrictModeError(f"strict mode: {result.key} skipped {skip.label} ({skip.origin}): {skip.reason}")


def _fingerprint(job: Job, layer: Layer) -> str:
    """What makes the numbers: model, layer, pooling, preprocessing and the source columns (not batch size)."""
    spec = job.spec.model_dump(exclude={"batch_size", "output_layers"})
    source = job.settings.model_dump(exclude={"model", "output_path", "format", "dtype", "input_path"})
    payload = {"modality": job.modality, "source": job.source, "backend": job.backend, "layer": layer.name,
               "pooling": layer.pooling, "format": job.format, "spec": spec, "columns": source}
    if job.dtype != "float32":  # float32 outputs keep the fingerprint they had before the dtype key
        payload["dtype"] = job.dtype
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _manifest(job: Job, layer: Layer, writer: LayerWriter, extractor: Extractor, config: Config,
              input_sha: str, device: str, status: str, count: int, failures: int = 0) -> dict[str, Any]:
    return {
        "status": status,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ducho_version": __version__,
        "modality": job.modality,
        "source": job.source,
        "job": job.key,
        "backend": job.backend,
        **extractor.describe(),
        "layer": layer.folder,
        "computed_layer": layer.name,
        "pooling": layer.pooling,
        "normalize": job.spec.normalize,
        "preprocessing": _preprocessing(job, extractor),
        "source_settings": job.settings.model_dump(exclude={"model"}),
        "model_settings": job.spec.model_dump(),
        "dtype": job.dtype,
        "shape": writer.shape_label(),
        "count": count,
        "failures": failures,
        "format": job.format,
        "layout": type(writer).layout,
        "input": str(job.input_path),
        "input_sha256": input_sha,
        "device": device,
        "precision": job.spec.precision,
        "fingerprint": _fingerprint(job, layer),
        "config_sha256": hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
        "libraries": library_versions(),
    }


def _preprocessing(job: Job, extractor: Extractor) -> dict[str, Any]:
    described = dict(extractor.describe().get("preprocessing", {}))
    if job.modality == "textual":
        described = {"clear_text": job.spec.clear_text, "empty_text": job.settings.empty_text,
                     "duplicate_ids": job.settings.duplicate_ids, "text_column": job.settings.text_column, **described}
    return described


def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("torch", "torchvision", "torchaudio", "transformers", "sentence-transformers", "tokenizers",
                 "pillow", "soundfile", "soxr", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
