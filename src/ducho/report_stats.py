"""What the report computes for one layer, in bounded memory: statistics streamed over every record (norms, NaN/Inf,
constant dimensions, exact duplicates by row hash, near duplicates), and on a sample of records the 2-D projection,
neighbour lists and k-NN label accuracy.

Memory: O(records) scalars (norms, hashes, a 16-D projection for the near-duplicate search) plus one chunk and the
sample, never the (records x dimension) matrix. The sample is the `sample` records whose ids hash lowest, so layers
that hold the same ids sample the same records (needed to compare their neighbour lists).
"""

from __future__ import annotations

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

log = logging.getLogger("ducho")

NEAR = 0.999  # cosine above which two records are near duplicates
CHUNK_BYTES = 16 << 20  # one chunk of vectors read at a time (its temporaries take a few times that)
SAMPLE_BYTES = 256 << 20  # the sample is cut down for very wide layers (e.g. a large TF-IDF vocabulary)
PROJECTED = 16  # dimensions of the projection that filters near-duplicate candidates
TABLES = 8  # hash tables of the near-duplicate search
MAX_BUCKET = 2000  # records sharing one signature past which the near-duplicate search falls back to the sample
MAX_GROUPS = 100  # duplicate groups kept for the page (all are counted)
NEIGHBOURS = 5  # neighbours shown per record, and k of the k-NN accuracy
QUERIES = 12  # records whose neighbours among all records are shown


@dataclass
class Groups:
    """Duplicate groups: how many, how many records they cover, and the largest (positions) for the page."""

    count: int = 0
    records: int = 0
    largest: list[list[int]] = field(default_factory=list)
    scope: str = "all records"


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


def sample_positions(ids: Sequence[str], size: int) -> np.ndarray:
    """Positions of the `size` ids with the lowest hash (the same ids in every layer), sorted."""
    if len(ids) <= size:
        return np.arange(len(ids), dtype=np.int64)
    keys = np.fromiter((int.from_bytes(hashlib.blake2b(i.encode("utf-8", "surrogateescape"), digest_size=8).digest(),
                                       "little") for i in ids), dtype=np.uint64, count=len(ids))
    return np.sort(np.argpartition(keys, size)[:size]).astype(np.int64)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-30)


def analyse(vectors: Records, sample: int = 2000, near: float = NEAR) -> LayerStats:
    """Stream the layer once for the statistics and the sample; again (only when not every record is sampled) for
    the near-duplicate candidates and the neighbours of a few records among all records."""
    stats = LayerStats(count=len(vectors))
    n = len(vectors)
    if n == 0:
        return stats
    chosen = sample_positions(vectors.ids, sample)
    norms = np.full(n, np.nan, np.float32)
    hashes = np.zeros(n, np.uint64)
    valid = np.zeros(n, bool)  # finite and non-zero: usable for cosine
    stats.dim = vectors.dim()
    if len(chosen) * stats.dim * 4 > SAMPLE_BYTES:  # very wide layers: a smaller sample
        chosen = sample_positions(vectors.ids, max(200, SAMPLE_BYTES // (4 * stats.dim)))
        stats.notes.append(f"sample cut to {len(chosen)} records for a {stats.dim}-wide layer")
    picked = np.zeros((len(chosen), stats.dim), np.float32)
    lo = np.full(stats.dim, np.inf, np.float32)
    hi = np.full(stats.dim, -np.inf, np.float32)
    for start, block in vectors.chunks(_chunk_rows(stats.dim)):
        stop = start + len(block)
        nan = np.isnan(block).any(axis=1)
        inf = np.isinf(block).any(axis=1)
        finite = ~(nan | inf)
        stats.nan_rows += int(nan.sum())
        stats.inf_rows += int((inf & ~nan).sum())
        stats.bad_examples += [start + int(i) for i in np.flatnonzero(~finite)[:20 - len(stats.bad_examples)]]
        good = block[finite]
        if len(good):
            lo = np.minimum(lo, good.min(axis=0))
            hi = np.maximum(hi, good.max(axis=0))
        norm = np.linalg.norm(np.where(finite[:, None], block, 0), axis=1)
        norms[start:stop] = np.where(finite, norm, np.nan)
        valid[start:stop] = finite & (norm > 0)
        stats.zero_rows += int((finite & (norm == 0)).sum())
        clean = block + np.float32(0)  # -0.0 and 0.0 hash alike
        for offset in np.flatnonzero(finite):
            hashes[start + offset] = int.from_bytes(hashlib.blake2b(clean[offset].tobytes(), digest_size=8).digest(),
                                                    "little")
        lo_i, hi_i = np.searchsorted(chosen, [start, stop])
        picked[lo_i:hi_i] = block[chosen[lo_i:hi_i] - start]
    finite_rows = n - stats.nan_rows - stats.inf_rows
    if finite_rows > 1:
        stats.constant_dims = np.flatnonzero(lo == hi).tolist()
    _norm_histogram(stats, norms[np.isfinite(norms)])
    stats.exact = _exact_groups(hashes, np.isfinite(norms))
    keep = valid[chosen]
    stats.sample = chosen[keep]
    stats.unit = unit_rows(picked[keep])
    basis = _principal(stats.unit, PROJECTED)
    stats.projections = project(stats.unit, stats.notes, basis)
    if len(chosen) == n:  # everything is in the sample: the rest is exact, in memory
        stats.near = _near_in_sample(stats, hashes, near, "all records")
        stats.neighbours = _sample_neighbours(stats)
    else:
        _second_pass(vectors, stats, hashes, valid, near, basis)
    return stats


def _chunk_rows(dim: int) -> int:
    return max(16, min(65536, CHUNK_BYTES // (4 * max(dim, 1))))


def _norm_histogram(stats: LayerStats, norms: np.ndarray, bins: int = 40) -> None:
    if not len(norms):
        return
    low, high = float(norms.min()), float(norms.max())
    if high - low < 1e-6 * max(1.0, abs(high)):
        low, high = low - 0.5 * max(abs(low), 1e-3) * 1e-3, high + 0.5 * max(abs(high), 1e-3) * 1e-3
    counts, edges = np.histogram(norms, bins=bins, range=(low, high))
    stats.norm_counts, stats.norm_edges = counts.tolist(), edges.tolist()
    q = np.percentile(norms, [1, 50, 99])
    stats.norm_summary = {"min": float(norms.min()), "p1": float(q[0]), "median": float(q[1]), "p99": float(q[2]),
                          "max": float(norms.max()), "mean": float(norms.mean())}


def _runs(keys: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
    """Positions grouped by equal key (groups of two or more)."""
    order = np.argsort(keys, kind="stable")
    keys, positions = keys[order], positions[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.empty(0, np.int64)
    lengths = np.diff(np.r_[starts, len(keys)])
    return [positions[a:a + n] for a, n in zip(starts[lengths > 1].tolist(), lengths[lengths > 1].tolist())]


def _exact_groups(hashes: np.ndarray, finite: np.ndarray) -> Groups:
    positions = np.flatnonzero(finite)
    runs = _runs(hashes[positions], positions)
    return _groups([sorted(g.tolist()) for g in runs], "all records")


def _groups(groups: list[list[int]], scope: str) -> Groups:
    groups.sort(key=lambda g: (-len(g), g[0]))
    return Groups(len(groups), sum(len(g) for g in groups), [g[:50] for g in groups[:MAX_GROUPS]], scope)


def _components(pairs: np.ndarray, members: dict[int, list[int]]) -> list[list[int]]:
    """Connected components of the pairs (union-find), each expanded by its members' exact duplicates."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    found: dict[int, list[int]] = {}
    for x in parent:
        found.setdefault(root(x), []).extend(members.get(x, [x]))
    return [sorted(g) for g in found.values()]


def _representatives(hashes: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, dict[int, list[int]]]:
    """One position per distinct vector among `positions` (sorted), and each representative's exact duplicates."""
    members: dict[int, list[int]] = {}
    drop: set[int] = set()
    for run in _runs(hashes[positions], positions):
        run = np.sort(run)
        members[int(run[0])] = run.tolist()
        drop.update(run[1:].tolist())
    keep = np.array([p for p in positions.tolist() if p not in drop], np.int64)
    return keep, members


def _near_pairs(unit: np.ndarray, near: float, block: int = 2048) -> np.ndarray:
    """Pairs (i < j) of rows of `unit` with cosine above `near`."""
    found = []
    for start in range(0, len(unit), block):
        sims = unit[start:start + block] @ unit.T
        i, j = np.nonzero(sims > near)
        i = i + start
        found.append(np.stack([i[i < j], j[i < j]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), np.int64)


def _near_in_sample(stats: LayerStats, hashes: np.ndarray, near: float, scope: str) -> Groups:
    """Near-duplicate groups among the sampled records (all of them when the layer is small)."""
    reps, members = _representatives(hashes, stats.sample)
    index = {int(p): k for k, p in enumerate(stats.sample.tolist())}
    pairs = _near_pairs(stats.unit[[index[int(p)] for p in reps]], near) if len(reps) else np.empty((0, 2), int)
    return _groups(_components(reps[pairs] if len(pairs) else pairs, members), scope)


def _second_pass(vectors: Records, stats: LayerStats, hashes: np.ndarray, valid: np.ndarray, near: float,
                 basis: np.ndarray) -> None:
    """Stream again: near-duplicate signatures of every record, and the neighbours of a few sampled records among
    all records."""
    queries = stats.unit[:QUERIES]
    query_pos = stats.sample[:QUERIES]
    best_sim = np.full((len(queries), NEIGHBOURS), -np.inf, np.float32)
    best_pos = np.full((len(queries), NEIGHBOURS), -1, np.int64)
    mean = stats.unit.mean(axis=0) if len(stats.unit) else np.zeros(stats.dim, np.float32)
    bits = int(min(30, max(12, np.ceil(np.log2(max(len(vectors), 2))) + 2)))
    planes = np.random.default_rng(0).standard_normal((stats.dim, TABLES * bits)).astype(np.float32)
    weights = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))
    projected = np.zeros((len(vectors), basis.shape[1]), np.float32)
    codes = np.zeros((len(vectors), TABLES), np.uint64)
    for start, block in vectors.chunks(_chunk_rows(stats.dim)):
        stop = start + len(block)
        ok = valid[start:stop]
        unit = unit_rows(np.where(ok[:, None], block, 0))
        centred = unit - mean
        projected[start:stop] = centred @ basis
        signs = (centred @ planes > 0).reshape(len(block), TABLES, bits)
        codes[start:stop] = (signs * weights).sum(axis=2, dtype=np.uint64)
        if len(queries):
            sims = queries @ unit.T
            sims[:, ~ok] = -np.inf
            own = (query_pos >= start) & (query_pos < stop)
            sims[np.flatnonzero(own), query_pos[own] - start] = -np.inf
            all_sim = np.concatenate([best_sim, sims], axis=1)
            all_pos = np.concatenate([best_pos, np.broadcast_to(np.arange(start, stop), sims.shape)], axis=1)
            top = np.argsort(-all_sim, axis=1, kind="stable")[:, :NEIGHBOURS]
            best_sim = np.take_along_axis(all_sim, top, axis=1)
            best_pos = np.take_along_axis(all_pos, top, axis=1)
    stats.neighbours = [(int(q), [(int(p), float(s)) for p, s in zip(ps, ss) if p >= 0 and np.isfinite(s)])
                        for q, ps, ss in zip(query_pos, best_pos, best_sim)]
    stats.near = _near_everywhere(vectors, stats, hashes, valid, projected, codes, near)


def _near_everywhere(vectors: Records, stats: LayerStats, hashes: np.ndarray, valid: np.ndarray,
                     projected: np.ndarray, codes: np.ndarray, near: float) -> Groups:
    """Candidates: pairs that share a signature in one of the hash tables (random hyperplanes; a pair at exactly
    the threshold is missed with a probability under 1%, closer pairs practically never) and lie within the
    near-duplicate distance in every projected coordinate (a projection only shrinks distances); then their cosines
    from the vectors themselves. Falls back to the sample when the candidates abound (degenerate layers)."""
    reps, members = _representatives(hashes, np.flatnonzero(valid))
    if len(reps) < 2:
        return _groups([], "all records")
    radius = float(np.sqrt(max(2 - 2 * near, 0.0))) * 1.0001 + 1e-6
    points = projected[reps]
    found = []
    for table in range(codes.shape[1]):
        order = np.argsort(codes[reps, table], kind="stable")
        ordered = codes[reps, table][order]
        offset = 1
        while offset < len(order):
            same = ordered[offset:] == ordered[:-offset]
            if not same.any():
                break
            if offset >= MAX_BUCKET:
                stats.notes.append("near duplicates searched among the sampled records only (over "
                                   f"{MAX_BUCKET:,} records share a signature)")
                return _near_in_sample(stats, hashes, near, "sampled records")
            a, b = order[:-offset][same], order[offset:][same]
            close = np.all(np.abs(points[a] - points[b]) <= radius, axis=1)
            found.append(np.stack([np.minimum(a, b)[close], np.maximum(a, b)[close]], axis=1))
            offset += 1
    pairs = np.unique(np.concatenate(found), axis=0) if found else np.empty((0, 2), np.int64)
    if not len(pairs):
        return _groups([], "all records")
    needed = np.unique(pairs)
    if len(needed) * stats.dim * 4 > SAMPLE_BYTES:
        stats.notes.append("near duplicates searched among the sampled records only (too many candidates)")
        return _near_in_sample(stats, hashes, near, "sampled records")
    rows = unit_rows(vectors.rows(reps[needed]))
    where = np.searchsorted(needed, pairs)
    cosine = np.einsum("ij,ij->i", rows[where[:, 0]], rows[where[:, 1]])
    return _groups(_components(reps[pairs[cosine > near]], members), "all records")


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
    return umap


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
