"""What the report computes for one layer, in bounded memory: statistics streamed over every record (norms, NaN/Inf,
constant dimensions, exact duplicates by row hash, near duplicates), and on a sample of records the 2-D projection,
neighbour lists and k-NN label accuracy.

Memory: one chunk of vectors, the sample, and one partition of the per-record data, which lives in scratch files
(norms, row hashes, near-duplicate signatures; `report_scratch`), never the (records x dimension) matrix nor arrays
of the record count. The sample is the `sample` records whose ids hash lowest, so layers that hold the same ids
sample the same records (needed to compare their neighbour lists).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .layer_files import Records
from .report_duplicates import (
    EXACT,
    PROJECTED,
    SIGNATURE,
    Groups,
    Hyperplanes,
    exact_entries,
    exact_groups,
    near_everywhere,
    near_in_sample,
)
from .report_scratch import Column, Scratch, order_statistics

log = logging.getLogger("ducho")

NEAR = 0.999  # cosine above which two records are near duplicates
CHUNK_BYTES = 16 << 20  # one chunk of vectors read at a time (its temporaries take a few times that)
SAMPLE_BYTES = 256 << 20  # the sample is cut down for very wide layers (e.g. a large TF-IDF vocabulary)
ID_SLICE = 1 << 20  # ids hashed at a time to choose the sample
NEIGHBOURS = 5  # neighbours shown per record, and k of the k-NN accuracy
QUERIES = 12  # records whose neighbours among all records are shown

@dataclass
class LayerStats:
    count: int = 0
    dim: int = 0
    nan_rows: int = 0
    inf_rows: int = 0
    zero_rows: int = 0
    bad_examples: list[int] = field(default_factory=list)  # positions of non-finite rows
    norm_edges: list[float] = field(default_factory=list)
    norm_counts: list[int] = field(default_factory=list)
    norm_summary: dict[str, float] = field(default_factory=dict)
    constant_dims: list[int] = field(default_factory=list)
    exact: Groups = field(default_factory=Groups)
    near: Groups = field(default_factory=Groups)
    sample: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # positions with a finite, non-zero
    unit: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))  # their unit vectors
    projections: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (len(sample), 2)
    neighbours: list[tuple[int, list[tuple[int, float]]]] = field(default_factory=list)  # query -> (pos, cosine)
    notes: list[str] = field(default_factory=list)


@dataclass
class Picked:
    """The sampled rows as read, whether each is usable (finite, non-zero), and their hashes."""

    rows: np.ndarray
    usable: np.ndarray
    hashes: np.ndarray


def sample_positions(ids: Sequence[str], size: int) -> np.ndarray:
    """Positions of the `size` ids with the lowest hash (the same ids in every layer), sorted; ids are hashed
    ID_SLICE at a time, keeping the lowest so far."""
    if len(ids) <= size:
        return np.arange(len(ids), dtype=np.int64)
    keys, positions = np.empty(0, np.uint64), np.empty(0, np.int64)
    for start in range(0, len(ids), ID_SLICE):
        part = ids[start:start + ID_SLICE]
        fresh = np.fromiter((int.from_bytes(hashlib.blake2b(i.encode("utf-8", "surrogateescape"), digest_size=8)
                                            .digest(), "little") for i in part), dtype=np.uint64, count=len(part))
        keys = np.concatenate([keys, fresh])
        positions = np.concatenate([positions, np.arange(start, start + len(part), dtype=np.int64)])
        if len(keys) > size:
            lowest = np.argpartition(keys, size)[:size]
            keys, positions = keys[lowest], positions[lowest]
    return np.sort(positions)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-30)


def analyse(vectors: Records, sample: int = 2000, near: float = NEAR) -> LayerStats:
    """Stream the layer once for the statistics and the sample; again (only when not every record is sampled) for
    the near-duplicate signatures and the neighbours of a few records among all records. Per-record data goes to
    scratch files, removed on return (or error)."""
    stats = LayerStats(count=len(vectors))
    if stats.count == 0:
        return stats
    stats.dim = vectors.dim()
    chosen = sample_positions(vectors.ids, sample)
    if len(chosen) * stats.dim * 4 > SAMPLE_BYTES:  # very wide layers: a smaller sample
        chosen = sample_positions(vectors.ids, max(200, SAMPLE_BYTES // (4 * stats.dim)))
        stats.notes.append(f"sample cut to {len(chosen)} records for a {stats.dim}-wide layer")
    with Scratch() as scratch:
        picked, hashes = _first_pass(vectors, stats, chosen, scratch)
        stats.sample = chosen[picked.usable]
        stats.unit = unit_rows(picked.rows[picked.usable])
        keys = picked.hashes[picked.usable]
        del picked
        basis = _principal(stats.unit, PROJECTED)
        stats.projections = project(stats.unit, stats.notes, basis)
        if len(chosen) == stats.count:  # everything is in the sample: the rest is exact, in memory
            stats.near = near_in_sample(stats.unit, stats.sample, keys, near, "all records")
            stats.neighbours = _sample_neighbours(stats)
        else:
            signatures = _second_pass(vectors, stats, hashes, scratch, basis)
            found = near_everywhere(vectors, stats.dim, signatures, hashes, scratch, near)
            if isinstance(found, str):
                stats.notes.append(f"near duplicates searched among the sampled records only ({found})")
                found = near_in_sample(stats.unit, stats.sample, keys, near, "sampled records")
            stats.near = found
    return stats


def _chunk_rows(dim: int) -> int:
    return max(16, min(16384, CHUNK_BYTES // (4 * max(dim, 1))))


def _row_facts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: finite, its norm (0 where not finite), usable for cosine (finite and non-zero)."""
    finite = np.isfinite(block).all(axis=1)
    norm = np.linalg.norm(np.where(finite[:, None], block, 0), axis=1)
    return finite, norm, finite & (norm > 0)


def _row_hashes(block: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each finite row's bytes (never 0); 0 for the others."""
    clean = block + np.float32(0)  # -0.0 and 0.0 hash alike
    rows = np.flatnonzero(finite)
    keys = np.zeros(len(block), np.uint64)
    keys[rows] = np.fromiter((int.from_bytes(hashlib.blake2b(clean[r].tobytes(), digest_size=8).digest(), "little")
                              or 1 for r in rows.tolist()), dtype=np.uint64, count=len(rows))
    return keys


def _first_pass(vectors: Records, stats: LayerStats, chosen: np.ndarray, scratch: Scratch) -> tuple[Picked, Column]:
    """Counts of bad rows and the range of each dimension; the norms and hashes of every row and the chunks' exact
    duplicate entries to scratch; the sampled rows. Returns those and the hash column."""
    picked = Picked(np.zeros((len(chosen), stats.dim), np.float32), np.zeros(len(chosen), bool),
                    np.zeros(len(chosen), np.uint64))
    norms, hashes = scratch.column("norms", np.float32), scratch.column("hashes", np.uint64)
    exact = scratch.partitions("exact", EXACT, "hash", stats.count)
    lo = np.full(stats.dim, np.inf, np.float32)
    hi = np.full(stats.dim, -np.inf, np.float32)
    for start, block in vectors.chunks(_chunk_rows(stats.dim)):
        finite, norm, usable = _row_facts(block)
        _count_bad_rows(stats, block, start, finite, norm)
        if finite.any():
            lo = np.minimum(lo, block[finite].min(axis=0))
            hi = np.maximum(hi, block[finite].max(axis=0))
        keys = _row_hashes(block, finite)
        norms.append(norm[finite])
        hashes.append(keys)
        exact.add(exact_entries(keys[finite], start + np.flatnonzero(finite)))
        lo_i, hi_i = np.searchsorted(chosen, [start, start + len(block)])
        rows = chosen[lo_i:hi_i] - start
        picked.rows[lo_i:hi_i], picked.usable[lo_i:hi_i] = block[rows], usable[rows]
        picked.hashes[lo_i:hi_i] = keys[rows]
    if norms.count > 1:
        stats.constant_dims = np.flatnonzero(lo == hi).tolist()
    _norm_statistics(stats, norms)
    stats.exact = exact_groups(exact, hashes)
    return picked, hashes


def _count_bad_rows(stats: LayerStats, block: np.ndarray, start: int, finite: np.ndarray, norm: np.ndarray) -> None:
    nan = np.isnan(block).any(axis=1)
    stats.nan_rows += int(nan.sum())
    stats.inf_rows += int((~finite & ~nan).sum())
    stats.zero_rows += int((finite & (norm == 0)).sum())
    stats.bad_examples += [start + int(i) for i in np.flatnonzero(~finite)[:20 - len(stats.bad_examples)]]


def _norm_statistics(stats: LayerStats, norms: Column, bins: int = 40) -> None:
    """Histogram and summary of the finite rows' norms, from their scratch column (exact percentiles, as numpy's
    linear interpolation between order statistics)."""
    if not norms.count:
        return
    where = (norms.count - 1) * np.array([0, 1, 50, 99, 100]) / 100
    below = np.floor(where).astype(np.int64)
    values = order_statistics(norms, np.r_[below, np.minimum(below + 1, norms.count - 1)]).astype(np.float64)
    q = values[:5] + (where - below) * (values[5:] - values[:5])
    low, high = float(values[0]), float(values[4])
    if high - low < 1e-6 * max(1.0, abs(high)):
        low, high = low - 0.5 * max(abs(low), 1e-3) * 1e-3, high + 0.5 * max(abs(high), 1e-3) * 1e-3
    counts, total = np.zeros(bins, np.int64), 0.0
    for _, chunk in norms.chunks():
        counts += np.histogram(chunk, bins=bins, range=(low, high))[0]
        total += float(chunk.sum(dtype=np.float64))
    stats.norm_counts = counts.tolist()
    stats.norm_edges = np.histogram_bin_edges(np.empty(0), bins=bins, range=(low, high)).tolist()
    stats.norm_summary = {"min": float(q[0]), "p1": float(q[1]), "median": float(q[2]), "p99": float(q[3]),
                          "max": float(q[4]), "mean": total / norms.count}


def _second_pass(vectors: Records, stats: LayerStats, hashes: Column, scratch: Scratch,
                 basis: np.ndarray) -> Column:
    """Stream again: the near-duplicate signature of every usable record to scratch (returned), and the neighbours
    of a few sampled records among all records."""
    queries, query_pos = stats.unit[:QUERIES], stats.sample[:QUERIES]
    best_sim = np.full((len(queries), NEIGHBOURS), -np.inf, np.float32)
    best_pos = np.full((len(queries), NEIGHBOURS), -1, np.int64)
    mean = stats.unit.mean(axis=0) if len(stats.unit) else np.zeros(stats.dim, np.float32)
    planes = Hyperplanes.build(mean, basis, len(vectors))
    signatures = scratch.column("signatures", SIGNATURE)
    with hashes.sequential() as next_hashes:
        for start, block in vectors.chunks(_chunk_rows(stats.dim)):
            _, norm, usable = _row_facts(block)
            unit = np.where(usable[:, None], block / np.where(usable, norm, 1)[:, None], 0).astype(np.float32)
            signatures.append(planes.signatures(unit, next_hashes(len(block)), usable, start))
            if len(queries):
                best_sim, best_pos = _closer(queries, query_pos, unit, usable, start, best_sim, best_pos)
    stats.neighbours = [(int(q), [(int(p), float(s)) for p, s in zip(ps, ss) if p >= 0 and np.isfinite(s)])
                        for q, ps, ss in zip(query_pos, best_pos, best_sim)]
    return signatures


def _closer(queries: np.ndarray, query_pos: np.ndarray, unit: np.ndarray, usable: np.ndarray, start: int,
            best_sim: np.ndarray, best_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The NEIGHBOURS nearest so far of each query, with one more chunk of unit vectors."""
    sims = queries @ unit.T
    sims[:, ~usable] = -np.inf
    own = (query_pos >= start) & (query_pos < start + len(unit))
    sims[np.flatnonzero(own), query_pos[own] - start] = -np.inf
    all_sim = np.concatenate([best_sim, sims], axis=1)
    all_pos = np.concatenate([best_pos, np.broadcast_to(np.arange(start, start + len(unit)), sims.shape)], axis=1)
    top = np.argsort(-all_sim, axis=1, kind="stable")[:, :NEIGHBOURS]
    return np.take_along_axis(all_sim, top, axis=1), np.take_along_axis(all_pos, top, axis=1)


def _principal(unit: np.ndarray, count: int) -> np.ndarray:
    """(d, k) orthonormal principal directions of the rows (k <= count), by randomized subspace iteration (Halko et
    al.): a few products with the sample instead of a full eigen-decomposition, which is slow on busy machines."""
    dim = unit.shape[1] if unit.ndim == 2 else 0
    if len(unit) < 2 or dim == 0:
        return np.eye(max(dim, 1), 1, dtype=np.float32)
    centred = (unit - unit.mean(axis=0)).astype(np.float64)
    width = min(count + 10, dim, len(unit))
    subspace = centred @ np.random.default_rng(0).standard_normal((dim, width))
    for _ in range(4):
        subspace, _ = np.linalg.qr(centred @ (centred.T @ np.linalg.qr(subspace)[0]))
    _, _, vt = np.linalg.svd(subspace.T @ centred, full_matrices=False)
    return np.ascontiguousarray(vt[:min(count, len(vt))].T.astype(np.float32))


def project(unit: np.ndarray, notes: list[str], basis: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """2-D views of the sampled unit vectors: PCA always (on `basis`, the principal directions, when given), UMAP
    when umap-learn is installed."""
    if len(unit) == 0:
        return {}
    basis = _principal(unit, 2) if basis is None else basis[:, :2]
    pca = (unit - unit.mean(axis=0)) @ basis
    if pca.shape[1] < 2:
        pca = np.concatenate([pca, np.zeros((len(pca), 2 - pca.shape[1]), np.float32)], axis=1)
    views = {"PCA": pca.astype(np.float32)}
    umap = _import_umap()
    if umap is not None and len(unit) >= 15:
        try:
            views["UMAP"] = _umap(umap, unit)
        except Exception as error:  # noqa: BLE001 - an optional view; the page says why it is missing
            notes.append(f"UMAP failed: {type(error).__name__}: {error}")
    return views


@functools.cache
def _import_umap() -> Any | None:
    """umap-learn, or None when it is not installed. Its package imports ParametricUMAP, hence TensorFlow (and then
    torch): TensorFlow imported before triton segfaults the process where both are installed, so that optional module
    is kept out of this import (it can still be imported by name afterwards)."""
    blocked = "umap.parametric_umap" not in sys.modules
    if blocked:
        sys.modules["umap.parametric_umap"] = None  # type: ignore[assignment] # an ImportError, which umap handles
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
    except ImportError:
        return None
    finally:
        if blocked and sys.modules.get("umap.parametric_umap", False) is None:
            del sys.modules["umap.parametric_umap"]
    _cache_compiled(umap)
    return umap


UMAP_COMPILED = [("umap_", "smooth_knn_dist"), ("umap_", "compute_membership_strengths"),
                 ("layouts", "_nb_optimize_layout_euclidean_single_epoch")]  # not cached on disk by umap itself


def _cache_compiled(umap: Any) -> None:
    """Numba compiles the umap functions that the report calls at their first call in every process (15 s of a
    report here), as umap does not cache them on disk: have numba cache them (in umap's __pycache__, else in numba's
    user cache folder; where neither is writable, they are compiled as before)."""
    for module, name in UMAP_COMPILED:
        function = getattr(getattr(umap, module, None), name, None)
        try:
            function.enable_caching()  # type: ignore[union-attr]
        except (AttributeError, RuntimeError):  # not a numba function any more, or nowhere to write
            log.debug("report: umap's %s is compiled without a disk cache", name)


def _umap(umap: Any, unit: np.ndarray) -> np.ndarray:
    """(n, 2) UMAP of unit vectors by cosine, on exact neighbour lists computed here (umap's own neighbour search
    is slow for a sample this small: a Python call per pair, and a long JIT compilation on first use)."""
    k = min(15, len(unit) - 1)
    lists = neighbour_lists(unit, k - 1)
    indices = np.concatenate([np.arange(len(unit))[:, None], lists], axis=1)  # each record first, at distance 0
    distances = np.zeros(indices.shape, np.float32)
    for column in range(1, k):
        cosine = np.einsum("ij,ij->i", unit, unit[indices[:, column]])
        distances[:, column] = np.maximum(1 - cosine, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = umap.UMAP(n_components=2, n_neighbors=k, random_state=0, n_jobs=1,
                          precomputed_knn=(indices, distances))
        return model.fit_transform(unit).astype(np.float32)


def _sample_neighbours(stats: LayerStats) -> list[tuple[int, list[tuple[int, float]]]]:
    """Neighbours of the first sampled records within the sample (when it holds every usable record)."""
    if len(stats.unit) < 2:
        return []
    sims = stats.unit[:QUERIES] @ stats.unit.T
    out = []
    for q in range(len(sims)):
        sims[q, q] = -np.inf
        top = np.argsort(-sims[q], kind="stable")[:NEIGHBOURS]
        out.append((int(stats.sample[q]), [(int(stats.sample[t]), float(sims[q, t])) for t in top]))
    return out


def neighbour_lists(unit: np.ndarray, count: int = 50) -> np.ndarray:
    """(n, count) indices of each row's nearest other rows (cosine), best first."""
    count = min(count, len(unit) - 1)
    if count <= 0:
        return np.empty((len(unit), 0), np.int64)
    out = np.empty((len(unit), count), np.int64)
    for start in range(0, len(unit), 1024):
        sims = unit[start:start + 1024] @ unit.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        top = np.argpartition(-sims, count - 1, axis=1)[:, :count]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start:start + len(sims)] = np.take_along_axis(top, order, axis=1)
    return out


def knn_accuracy(unit: np.ndarray, labels: Sequence[str | None], k: int = NEIGHBOURS) -> dict[str, float] | None:
    """Leave-one-out k-NN: each labelled row takes the majority label of its k nearest labelled rows (ties: the
    label of the nearest among them). Also the majority-class baseline."""
    mask = np.array([label is not None for label in labels], bool)
    known = [label for label in labels if label is not None]
    if len(known) < k + 1 or len(set(known)) < 2:
        return None
    lists = neighbour_lists(unit[mask], k)
    hits = 0
    for row, neighbours in enumerate(lists):
        votes = Counter(known[j] for j in neighbours)
        top = max(votes.values())
        guess = next(known[j] for j in neighbours if votes[known[j]] == top)
        hits += guess == known[row]
    baseline = Counter(known).most_common(1)[0][1] / len(known)
    return {"accuracy": hits / len(known), "records": len(known), "k": k, "baseline": baseline,
            "classes": len(set(known))}


def neighbour_overlap(ids_a: Sequence[str], lists_a: np.ndarray, ids_b: Sequence[str], lists_b: np.ndarray,
                      k: int = NEIGHBOURS) -> dict[str, float] | None:
    """Mean share of the k nearest neighbours two layers agree on, for the ids sampled in both, neighbours taken
    among those common ids (from each layer's neighbour lists of its sample)."""
    common = set(ids_a) & set(ids_b)
    if len(common) <= k:
        return None
    row_b = {i: r for r, i in enumerate(ids_b)}
    shares = []
    for row_a, record in enumerate(ids_a):
        if record not in common:
            continue
        near_a = [ids_a[j] for j in lists_a[row_a] if ids_a[j] in common][:k]
        near_b = [ids_b[j] for j in lists_b[row_b[record]] if ids_b[j] in common][:k]
        if near_a and near_b:
            shares.append(len(set(near_a) & set(near_b)) / min(k, len(near_a), len(near_b)))
    if not shares:
        return None
    return {"overlap": float(np.mean(shares)), "records": len(shares), "k": k,
            "chance": k / (len(common) - 1)}
