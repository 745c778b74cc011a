"""The Runner: walks the plan (modality -> source -> model), builds each model once, streams its records
through decoding (worker processes, started before the build where possible) -> prepare (background thread) -> one
forward for every layer -> writers (background thread)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import __version__
from .backends.base import Extractor, Layer
from .backends.registry import build_extractor, check_model, early_loader
from .config.load import load_config, translation_notes
from .config.schema import Config
from .device import resolve_device
from .errors import StrictModeError
from .loading import DecodeStream, Decoding, Failed, plan_decoding, reason_of
from .logs import run_log
from .plan import Job, build_plan
from .sources import Source, open_source
from .sources.base import Record, Skip
from .streams import WriteQueue, chunked, prefetch
from .writers import LayerWriter, atomic_write, open_writer, remove_temporaries, write_failures, write_manifest

log = logging.getLogger("ducho")

CHUNK = 2048  # records per resume unit; fixed so that a resumed run batches exactly as the first one


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
        device = resolve_device(config.device, config.device_fallback_to_cpu)
        log.info("device: %s; %d job(s)", device, len(jobs))
        sources: dict[str, tuple[Source, Any]] = {}
        results = []
        for job in jobs:
            if job.source_key not in sources:  # scanned once, shared by every model of the source
                source = open_source(job)
                sources[job.source_key] = (source, source.scan())
            source, scan = sources[job.source_key]
            results.append(run_job(job, source, scan, device, config, progress))
        return RunResult(results, log_file)


def run_job(job: Job, source: Source, scan: Any, device: str, config: Config, progress: bool) -> JobResult:
    started = time.perf_counter()
    log.info("%s: %s (%s) on %s -> %s", job.key, job.spec.model_name, job.backend, job.input_path, job.output_dir)
    decoding = plan_decoding(config.workers, device)
    model = _Model()
    with ExitStack() as cleanup:  # the decoding workers stop whatever happens
        stream = _early_stream(job, source, scan, config, decoding, model)
        if stream is not None:
            cleanup.callback(stream.close)
        extractor = build_extractor(job.modality, job.backend, job.spec, device)
        if hasattr(extractor, "fit"):  # fitted on the whole source first (deterministic, so a resume refits the same)
            extractor.fit(entry.payload for entry in source.records(scan, job.spec) if isinstance(entry, Record))
        load_seconds = time.perf_counter() - started
        log.info("%s: model loaded in %.1f s from %s", job.key, load_seconds, extractor.describe()["model"])
        input_sha = source.fingerprint(scan)
        remove_temporaries(job.output_dir)  # a killed run's failures.tsv (each layer writer cleans its own folder)
        writers = {layer.folder: open_writer(job.format, job.layer_dir(layer.folder), _fingerprint(job, layer),
                                             input_sha, config.overwrite, job.source == "interactions")
                   for layer in extractor.layers}
        result = JobResult(job.key, job.spec.model_name, job.output_dir, {}, load_seconds=load_seconds)
        for skip in scan.skipped:
            _report(result, skip, config)
        for layer in extractor.layers:
            for name, content in getattr(extractor, "artifacts", dict)().items():
                atomic_write(writers[layer.folder].folder / name, lambda handle, data=content: handle.write(data))
            if not writers[layer.folder].complete:
                write_manifest(writers[layer.folder].folder, _manifest(job, layer, writers[layer.folder], extractor,
                                                                       config, input_sha, device, "running", 0))
        model.extractor, model.writers = extractor, writers
        if extractor.loader is not None:
            log.info("%s: %d decoding worker(s) at nice %d%s", job.key, decoding.workers, decoding.nice,
                     ", started before the model was built" if stream is not None else "")
        if stream is not None and stream.loader != extractor.loader:  # not the loader expected: decode with its own
            stream.close()
            stream = None
        if stream is None:
            stream = DecodeStream(extractor.loader, _plan(job, source, scan, model), decoding)
            cleanup.callback(stream.close)
        sink = WriteQueue()
        bar = tqdm(total=scan.kept, desc=job.key, unit="rec", disable=not progress, dynamic_ncols=True)
        try:
            for event in prefetch(_events(stream, extractor)):
                kind = event[0]
                if kind == "skip":
                    _report(result, event[1], config)
                    bar.update(1)
                elif kind == "done":
                    result.resumed += event[1]
                    bar.update(event[1])
                elif kind == "batch":
                    _, chunk_index, records, positions, items, prepared = event
                    _extract(job, extractor, writers, sink, result, config, chunk_index, records, positions, items,
                             prepared)
                    bar.update(len(records))
                else:  # end of a chunk
                    for writer in writers.values():
                        sink.submit(writer.end_chunk, event[1], event[2])
            sink.close()
        finally:
            bar.close()
    for layer in extractor.layers:
        writer = writers[layer.folder]
        result.counts[layer.folder] = writer.finish()
        write_manifest(writer.folder, _manifest(job, layer, writer, extractor, config, input_sha, device,
                                                "complete", result.counts[layer.folder], len(result.skipped)))
    write_failures(job.output_dir / "failures.tsv", [(s.label, s.origin, s.reason) for s in result.skipped])
    result.seconds = time.perf_counter() - started
    rate = result.extracted / result.seconds if result.seconds else 0.0
    truncated = extractor.describe().get("truncated_texts")
    log.info("%s: %d extracted, %d already done, %d skipped (failures.tsv), %.1f rec/s%s", job.key,
             result.extracted, result.resumed, len(result.skipped), rate,
             f"; truncated texts: {truncated}" if truncated is not None else "")
    return result


@dataclass(frozen=True, slots=True)
class _Batch:
    """Records of one chunk extracted together, with their positions in the chunk."""

    chunk_index: int
    records: list[Record]
    positions: list[int]

    @property
    def payloads(self) -> list[Any]:
        return [record.payload for record in self.records]


@dataclass
class _Model:
    """The job's extractor and writers, once built (the plan may start before, see `_early_stream`)."""

    extractor: Extractor | None = None
    writers: dict[str, LayerWriter] | None = None


def _plan(job: Job, source: Source, scan: Any, model: _Model) -> Iterator[Any]:
    """Read, chunk, pass over the chunks already written, order by size and batch. Runs where the decoding takes
    more work; events: ("skip", Skip), ("done", count), `_Batch`, ("end", chunk_index, count)."""
    skipped: list[Skip] = []

    def records() -> Iterator[Record]:
        for entry in source.records(scan, job.spec):
            if isinstance(entry, Skip):
                skipped.append(entry)
            else:
                yield entry

    for chunk_index, chunk in enumerate(chunked(records(), CHUNK)):
        yield from (("skip", s) for s in skipped)
        skipped.clear()
        if model.extractor is None or model.writers is None:  # a fresh output, decoding before the model is built
            if chunk_index > 0:
                raise RuntimeError("the plan went past the first chunk before the model was built")
            order = list(range(len(chunk)))  # models with an early loader give every payload the same sort key
        elif all(w.is_done(chunk_index, [r.key for r in chunk]) for w in model.writers.values()):
            yield ("done", len(chunk))
            continue
        else:
            extractor = model.extractor
            order = sorted(range(len(chunk)), key=lambda i: -extractor.sort_key(chunk[i].payload))
        for start in range(0, len(order), job.spec.batch_size):
            positions = order[start:start + job.spec.batch_size]
            yield _Batch(chunk_index, [chunk[i] for i in positions], positions)
        yield ("end", chunk_index, len(chunk))
    yield from (("skip", s) for s in skipped)


def _early_stream(job: Job, source: Source, scan: Any, config: Config, decoding: Decoding,
                  model: _Model) -> DecodeStream | None:
    """Start decoding before the model is built, where its loader is known without it and nothing of the job is
    on disk yet (so no chunk can be done): the first batches are then ready when the model is. With batches of at
    most half a chunk, the workers' first pieces all come from the first chunk."""
    if decoding.workers == 0 or job.spec.batch_size > CHUNK // 2:
        return None
    if not config.overwrite and any(d.exists() for d in (job.output_dir, job.text_output_dir) if d is not None):
        return None
    loader = early_loader(job.modality, job.backend, job.spec)
    return DecodeStream(loader, _plan(job, source, scan, model), decoding) if loader is not None else None


def _events(stream: DecodeStream, extractor: Extractor) -> Iterator[tuple[Any, ...]]:
    """Runs in the prefetch thread: the plan's events, each batch loaded (worker processes) and prepared."""
    for event, loaded in stream:
        if not isinstance(event, _Batch):
            yield event
            continue
        assert loaded is not None
        for record, item in zip(event.records, loaded):
            if isinstance(item, Failed):
                yield ("skip", Skip(record.key.label, record.origin, item.reason))
        good = [n for n, item in enumerate(loaded) if not isinstance(item, Failed)]
        if not good:
            continue
        items = [loaded[n] for n in good]
        try:
            prepared: Any = extractor.prepare(items)
        except Exception as error:  # isolated record by record in the main thread
            prepared = error
        yield ("batch", event.chunk_index, [event.records[n] for n in good], [event.positions[n] for n in good],
               items, prepared)


def _extract(job: Job, extractor: Extractor, writers: dict[str, LayerWriter], sink: WriteQueue,
             result: JobResult, config: Config, chunk_index: int, records: list[Record], positions: list[int],
             items: list[Any], prepared: Any) -> None:
    """One forward for the batch; on an error each record is retried alone so one bad record costs only itself."""
    outputs = _forward(extractor, prepared)
    if isinstance(outputs, Exception):
        if len(records) == 1:
            _report(result, Skip(records[0].key.label, records[0].origin, reason_of(outputs)), config)
            return
        for record, position, item in zip(records, positions, items):
            _extract(job, extractor, writers, sink, result, config, chunk_index, [record], [position], [item],
                     _prepare_one(extractor, item))
        return
    keep = [i for i in range(len(records)) if _finite(outputs, i, records[i], result, config)]
    for folder, arrays in outputs.items():
        chosen = [_normalized(arrays[i]) if job.spec.normalize else arrays[i] for i in keep]
        sink.submit(writers[folder].write, chunk_index, [positions[i] for i in keep],
                    [records[i].key for i in keep], chosen)
    result.extracted += len(keep)


def _forward(extractor: Extractor, prepared: Any) -> Any:
    if isinstance(prepared, Exception):
        return prepared
    try:
        return extractor.forward(prepared)
    except Exception as error:
        return error


def _prepare_one(extractor: Extractor, item: Any) -> Any:
    try:
        return extractor.prepare([item])
    except Exception as error:
        return error


def _finite(outputs: dict[str, Any], index: int, record: Record, result: JobResult, config: Config) -> bool:
    for folder, arrays in outputs.items():
        if not np.isfinite(arrays[index]).all():
            _report(result, Skip(record.key.label, record.origin, f"non-finite values in layer {folder}"), config)
            return False
    return True


def _normalized(array: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / np.maximum(norm, 1e-12)).astype(np.float32)


def _report(result: JobResult, skip: Skip, config: Config) -> None:
    result.skipped.append(skip)
    log.warning("%s: skipped %s (%s): %s", result.key, skip.label, skip.origin, skip.reason)
    if config.strict:
        raise StrictModeError(f"strict mode: {result.key} skipped {skip.label} ({skip.origin}): {skip.reason}")


def _fingerprint(job: Job, layer: Layer) -> str:
    """What makes the numbers: model, layer, pooling, preprocessing and the source columns (not batch size)."""
    spec = job.spec.model_dump(exclude={"batch_size", "output_layers"})
    source = job.settings.model_dump(exclude={"model", "output_path", "format", "input_path"})
    payload = {"modality": job.modality, "source": job.source, "backend": job.backend, "layer": layer.name,
               "pooling": layer.pooling, "format": job.format, "spec": spec, "columns": source}
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
        "dtype": "float32",
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
