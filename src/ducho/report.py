"""`ducho report`: one self-contained HTML page over every layer of every model under a folder, showing what the
features are worth (counts and failures, norms, NaN/Inf, constant dimensions, duplicates, a 2-D projection,
neighbours, the manifest; across layers k-NN label accuracy and the agreement of neighbours between modalities).

The statistics are streamed over every record; plots and neighbour lists use a sample (`sample_positions`), so time
and memory stay bounded for large layers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

from . import __version__
from .errors import DuchoError
from .layer_files import Layer, find_layers, open_records, read_failures
from .report_html import LayerView, Record, render
from .report_media import Labels, Media, label_of
from .report_stats import LayerStats, analyse, knn_accuracy, neighbour_lists, neighbour_overlap
from .writers import write_text

log = logging.getLogger("ducho")

DEFAULT_SAMPLE = 2000
REPORT = "report.html"


def write_report(folder: str | Path | Sequence[str | Path], path: str | Path | None = None, *,
                 labels: str | Path | None = None, label_column: str | None = None,
                 sample: int = DEFAULT_SAMPLE) -> Path:
    """Write the report of every layer under `folder` (a dataset folder, an output folder, or several) to `path`
    (default: `<folder>/report.html`) and return its path."""
    roots = [Path(folder)] if isinstance(folder, (str, Path)) else [Path(f) for f in folder]
    if not roots:
        raise DuchoError("report: no folder given")
    target = Path(path) if path is not None else roots[0] / REPORT
    if sample < 2:
        raise DuchoError(f"report: --sample must be at least 2 (got {sample})")
    layers = find_layers(roots)
    if not layers:
        raise DuchoError(f"report: no layer folder (with a manifest.json) under {', '.join(map(str, roots))}")
    try:
        label_file = Labels(labels, label_column) if labels is not None else None
    except (OSError, ValueError) as error:
        raise DuchoError(f"report: labels: {error}") from error
    media = Media()
    views, lists = [], []
    with _one_blas_thread():
        for layer in layers:
            view, neighbour_ids = _layer_view(layer, media, label_file, sample)
            views.append(view)
            lists.append(neighbour_ids)
    overlaps = _overlaps(views, lists)
    meta = {"root": ", ".join(str(r.resolve()) for r in roots), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "version": __version__, "sample": sample, "labels": str(labels) if labels else None,
            "label_count": label_file.count if label_file else 0}
    write_text(target, render(views, overlaps, media.table, meta))
    log.info("report: %d layer(s) -> %s", len(views), target)
    return target


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS on one thread (threadpoolctl, when installed): the report's products are small, and threaded OpenBLAS
    runs them many times slower on a machine whose cores are busy (measured: 4.8 s against 12.4 s)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _layer_view(layer: Layer, media: Media, label_file: Labels | None,
                sample: int) -> tuple[LayerView, tuple[list[str], np.ndarray]]:
    started = time.perf_counter()
    try:
        vectors = open_records(layer)
        stats = analyse(vectors, sample)
    except (OSError, ValueError, KeyError, ImportError, DuchoError) as error:  # a damaged or foreign layer: go on
        log.warning("report: cannot read %s: %s", layer.folder, error)
        stats = LayerStats(notes=[f"cannot read this layer: {type(error).__name__}: {error}"])
        return LayerView(layer, stats, "", [], read_failures(layer.model_folder), [], [], [], []), ([], np.empty(0))

    if layer.manifest.get("status", "complete") != "complete":
        stats.notes.append(f"manifest status {layer.manifest.get('status')!r}: the run that writes this layer has not "
                           "finished (or was stopped); the report shows what is there")

    shown = sorted({int(p) for p in stats.sample} | {q for q, _ in stats.neighbours}
                   | {p for _, found in stats.neighbours for p, _ in found})
    labels = label_file.of({vectors.ids[p] for p in shown} | {vectors.items[p] for p in shown}) if label_file else {}

    def record(position: int, preview: int | None = None) -> Record:
        return Record(vectors.ids[position], label_of(labels, vectors.ids[position], vectors.items[position]),
                      preview)

    previews = dict(zip(shown, media.previews(layer, ((vectors.items[p], vectors.users[p]) for p in shown))))
    sampled = [record(int(p), previews.get(int(p))) for p in stats.sample]
    neighbours = [(record(q, previews.get(q)), [(record(p, previews.get(p)), cos) for p, cos in found])
                  for q, found in stats.neighbours]
    sample_labels = [r.label for r in sampled]
    knn = knn_accuracy(stats.unit, sample_labels) if labels else None
    ids = [r.id for r in sampled]
    lists = neighbour_lists(stats.unit)
    stats.unit = np.empty((0, 0), np.float32)  # the sample's vectors are not needed any more

    def names(groups: list[list[int]]) -> list[list[str]]:
        return [[vectors.ids[p] for p in group] for group in groups]

    bad = [vectors.ids[p] for p in stats.bad_examples]
    view = LayerView(layer, stats, vectors.note, sampled, read_failures(layer.model_folder), neighbours,
                     names(stats.exact.largest), names(stats.near.largest), bad, knn, time.perf_counter() - started)
    log.info("report: %s: %d records, dim %d, %.1f s", layer.name, stats.count, stats.dim, view.seconds)
    return view, (ids, lists)


def _overlaps(views: list[LayerView], lists: list[tuple[list[str], np.ndarray]]) -> list[tuple[str, str, dict]]:
    """Neighbour agreement for each pair of layers of different modalities that share records."""
    out = []
    for a, b in combinations(range(len(views)), 2):
        if views[a].layer.modality == views[b].layer.modality or not len(lists[a][0]) or not len(lists[b][0]):
            continue
        found = neighbour_overlap(lists[a][0], lists[a][1], lists[b][0], lists[b][1])
        if found is not None:
            out.append((views[a].layer.title, views[b].layer.title, found))
    return out
