"""Duplicate records for the report, in bounded memory: exact duplicates by row hash over every record, and near
duplicates (cosine above a threshold) over every record by locality-sensitive hashing, or within the sample.

Per-record data lives in scratch files (`report_scratch`): each partition of equal keys is brought into memory alone,
and only the groups shown (the largest MAX_GROUPS, MEMBERS positions each) are kept whole."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layer_files import Records
from .report_scratch import PART_BYTES, Column, Partitions, Scratch

PROJECTED = 16  # dimensions of the projection that filters near-duplicate candidates
TABLES = 8  # hash tables of the near-duplicate search
MAX_BUCKET = 2000  # records sharing one signature past which the near-duplicate search falls back to the sample
SKEW = 8  # a partition this many times its expected size: signatures shared by very many records (same fallback)
MAX_GROUPS = 100  # duplicate groups kept for the page (all are counted)
MEMBERS = 50  # positions kept per group shown
CANDIDATE_BYTES = 256 << 20  # candidate vectors read back to check their cosines, past which the search falls back

EXACT = np.dtype([("hash", "<u8"), ("size", "<i8"), ("first", "<i8")])  # a distinct vector of a chunk
SIGNATURE = np.dtype([("hash", "<u8"), ("pos", "<i8"), ("code", "<u4", (TABLES,)), ("point", "<f4", (PROJECTED,))])
BUCKETED = np.dtype([("code", "<u4"), ("hash", "<u8"), ("pos", "<i8"), ("point", "<f4", (PROJECTED,))])


@dataclass
class Groups:
    """Duplicate groups: how many, how many records they cover, and the largest (positions) for the page."""

    count: int = 0
    records: int = 0
    largest: list[list[int]] = field(default_factory=list)
    scope: str = "all records"


Members = dict[int, tuple[int, list[int]]]  # a key -> how many records share it, the first MEMBERS positions


# ----------------------------------------------------------------------------------------------------- exact


def exact_entries(keys: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """One EXACT entry per distinct hash among a chunk's rows."""
    unique, first, counts = np.unique(keys, return_index=True, return_counts=True)
    entries = np.empty(len(unique), EXACT)
    entries["hash"], entries["size"], entries["first"] = unique, counts, positions[first]
    return entries


def exact_groups(entries: Partitions, hashes: Column) -> Groups:
    """Groups of identical vectors over every record, from the chunks' EXACT entries (partitioned by hash) and the
    column of every record's hash (for the positions of the groups shown)."""
    count = records = 0
    top = np.empty(0, EXACT)
    for part in entries:
        merged = _merge(part)
        repeated = merged[merged["size"] > 1]
        count += len(repeated)
        records += int(repeated["size"].sum())
        top = np.concatenate([top, repeated])
        top = top[np.lexsort((top["first"], -top["size"]))[:MAX_GROUPS]]
    members = members_of(hashes, top["hash"])
    return Groups(count, records, [members[h][1] for h in top["hash"].tolist()], "all records")


def _merge(entries: np.ndarray) -> np.ndarray:
    """EXACT entries of one hash summed into one."""
    if not len(entries):
        return entries
    entries = entries[np.argsort(entries["hash"], kind="stable")]
    starts = np.flatnonzero(np.r_[True, entries["hash"][1:] != entries["hash"][:-1]])
    merged = np.empty(len(starts), EXACT)
    merged["hash"] = entries["hash"][starts]
    merged["size"] = np.add.reduceat(entries["size"], starts)
    merged["first"] = np.minimum.reduceat(entries["first"], starts)
    return merged


def members_of(hashes: Column, wanted: np.ndarray) -> Members:
    """For each wanted hash: how many records have it, and the first MEMBERS of their positions (one pass)."""
    wanted = np.unique(wanted)
    sizes: dict[int, int] = {h: 0 for h in wanted.tolist()}
    firsts: dict[int, list[int]] = {h: [] for h in sizes}
    if not sizes:
        return {}
    for start, keys in hashes.chunks():
        hit = np.flatnonzero(np.isin(keys, wanted))
        order = np.argsort(keys[hit], kind="stable")  # by hash, positions ascending within one
        unique, begin, counts = np.unique(keys[hit][order], return_index=True, return_counts=True)
        for key, b, c in zip(unique.tolist(), begin.tolist(), counts.tolist()):
            sizes[key] += c
            room = min(c, MEMBERS - len(firsts[key]))
            firsts[key].extend((start + hit[order[b:b + max(room, 0)]]).tolist())
    return {h: (sizes[h], firsts[h]) for h in sizes}


# ------------------------------------------------------------------------------------------------------ near


def near_in_sample(unit: np.ndarray, sample: np.ndarray, keys: np.ndarray, near: float, scope: str) -> Groups:
    """Near-duplicate groups among the sampled records (`unit` their unit vectors, `keys` their hashes), exactly."""
    reps, members = _representatives(keys, sample)
    pairs = _near_pairs(unit[np.searchsorted(sample, reps)], near) if len(reps) else np.empty((0, 2), np.int64)
    return _groups(_components(reps[pairs], members), scope)


def _representatives(keys: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, Members]:
    """One position per distinct key among sorted `positions` (the first), and the members of repeated ones."""
    order = np.lexsort((positions, keys))
    keys, ordered = keys[order], positions[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.empty(0, np.int64)
    members: Members = {}
    for a, b in zip(starts.tolist(), np.r_[starts[1:], len(keys)].tolist()):
        if b - a > 1:
            members[int(ordered[a])] = (b - a, ordered[a:a + MEMBERS].tolist())
    return np.sort(ordered[starts]), members


def _near_pairs(unit: np.ndarray, near: float, block: int = 2048) -> np.ndarray:
    """Pairs (i < j) of rows of `unit` with cosine above `near`."""
    found = [np.empty((0, 2), np.int64)]
    for start in range(0, len(unit), block):
        sims = unit[start:start + block] @ unit.T
        i, j = np.nonzero(sims > near)
        i = i + start
        found.append(np.stack([i[i < j], j[i < j]], axis=1))
    return np.concatenate(found)


def _components(pairs: np.ndarray, members: Members) -> list[tuple[int, list[int]]]:
    """Connected components of the pairs (union-find) as (records, first positions), each record counted with its
    exact duplicates (`members`)."""
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
    found: dict[int, list[tuple[int, list[int]]]] = {}
    for x in parent:
        found.setdefault(root(x), []).append(members.get(x, (1, [x])))
    return [(sum(size for size, _ in group), sorted(p for _, firsts in group for p in firsts)[:MEMBERS])
            for group in found.values()]


def _groups(groups: list[tuple[int, list[int]]], scope: str) -> Groups:
    groups.sort(key=lambda g: (-g[0], g[1][0]))
    return Groups(len(groups), sum(size for size, _ in groups), [g[1] for g in groups[:MAX_GROUPS]], scope)


@dataclass
class Hyperplanes:
    """The signatures of the near-duplicate search: TABLES codes of `bits` random hyperplanes each, and the position
    on the principal directions (`basis`), of unit vectors centred on the sample's mean."""

    mean: np.ndarray
    basis: np.ndarray
    planes: np.ndarray
    bits: int

    @classmethod
    def build(cls, mean: np.ndarray, basis: np.ndarray, records: int) -> Hyperplanes:
        bits = int(min(30, max(12, np.ceil(np.log2(max(records, 2))) + 2)))
        planes = np.random.default_rng(0).standard_normal((len(mean), TABLES * bits)).astype(np.float32)
        return cls(mean, basis[:, :PROJECTED], planes, bits)

    def signatures(self, unit: np.ndarray, keys: np.ndarray, usable: np.ndarray, start: int) -> np.ndarray:
        """SIGNATURE entries of a chunk's usable rows, one per distinct vector in the chunk."""
        rows = np.flatnonzero(usable)
        rows = rows[np.unique(keys[rows], return_index=True)[1]]
        centred = unit[rows] - self.mean
        out = np.zeros(len(rows), SIGNATURE)
        out["hash"], out["pos"] = keys[rows], start + rows
        signs = (centred @ self.planes > 0).reshape(len(rows), TABLES, self.bits)
        packed = np.zeros((len(rows), TABLES, 4), np.uint8)  # bit k of a code: hyperplane k of its table
        packed[:, :, :(self.bits + 7) // 8] = np.packbits(signs, axis=2, bitorder="little")
        out["code"] = packed.view("<u4")[:, :, 0]
        out["point"][:, :self.basis.shape[1]] = centred @ self.basis
        return out


def near_everywhere(vectors: Records, dim: int, signatures: Column, hashes: Column, scratch: Scratch,
                    near: float) -> Groups | str:
    """Near-duplicate groups over every record; or why the search must fall back to the sample.

    Candidates: pairs that share a signature in one of the hash tables (random hyperplanes; a pair at exactly the
    threshold is missed with a probability under 1%, closer pairs practically never) and lie within the
    near-duplicate distance in every projected coordinate (a projection only shrinks distances); then their cosines
    from the vectors themselves."""
    radius = float(np.sqrt(max(2 - 2 * near, 0.0))) * 1.0001 + 1e-6
    pairs = np.empty((0, 2), np.int64)
    budget = CANDIDATE_BYTES // (4 * max(dim, 1))
    for table in range(TABLES):
        found = _table_candidates(scratch, signatures, table, radius)
        if isinstance(found, str):
            return found
        pairs = np.unique(np.concatenate([pairs, found]), axis=0)
        if len(np.unique(pairs)) > budget:
            return "too many candidates"
    if not len(pairs):
        return _groups([], "all records")
    needed = np.unique(pairs)
    rows = vectors.rows(needed)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-30)
    where = np.searchsorted(needed, pairs)
    close = pairs[np.einsum("ij,ij->i", rows[where[:, 0]], rows[where[:, 1]]) > near]
    reps = np.unique(close)
    keys = hashes.take(reps)
    by_hash = members_of(hashes, keys)
    return _groups(_components(close, {p: by_hash[k] for p, k in zip(reps.tolist(), keys.tolist())}), "all records")


def _table_candidates(scratch: Scratch, signatures: Column, table: int, radius: float) -> np.ndarray | str:
    """Candidate pairs (positions) of one hash table: its entries partitioned by code, each partition searched."""
    parts = scratch.partitions(f"table{table}", BUCKETED, "code", signatures.count)
    for _, chunk in signatures.chunks():
        entries = np.empty(len(chunk), BUCKETED)
        entries["code"], entries["hash"] = chunk["code"][:, table], chunk["hash"]
        entries["pos"], entries["point"] = chunk["pos"], chunk["point"]
        parts.add(entries)
    if parts.count > 1 and parts.sizes.max() > SKEW * PART_BYTES // BUCKETED.itemsize:
        return f"over {MAX_BUCKET:,} records share a signature"
    found = [np.empty((0, 2), np.int64)]
    for part in parts:
        pairs = _bucket_pairs(part, radius)
        if pairs is None:
            return f"over {MAX_BUCKET:,} records share a signature"
        found.append(pairs)
    return np.concatenate(found)


def _bucket_pairs(entries: np.ndarray, radius: float) -> np.ndarray | None:
    """Pairs (positions, smaller first) of distinct vectors with the same code and projected points within `radius`
    in every coordinate; None when over MAX_BUCKET of them share one code. Exact duplicates meet in one partition,
    in the order of their positions: the first of each stands for all. Within a code, records are swept in the order
    of their first coordinate: a record meets the next ones until one lies beyond `radius` on it."""
    kept = np.unique(entries["hash"], return_index=True)[1]
    order = kept[np.argsort(_sort_key(entries["code"][kept], entries["point"][kept, 0]))]
    codes, points, positions = entries["code"][order], entries["point"][order], entries["pos"][order]
    first = np.ascontiguousarray(points[:, 0])
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.empty(0, np.int64)
    lengths = np.diff(np.r_[starts, len(codes)])
    if len(lengths) and lengths.max() > MAX_BUCKET:
        return None
    left = np.repeat(lengths, lengths) - (np.arange(len(codes)) - np.repeat(starts, lengths))  # to its run's end
    found = [np.empty((0, 2), np.int64)]
    active, offset = np.flatnonzero(left > 1), 1
    while len(active):
        a = active[first[active + offset] - first[active] <= radius]
        b = a + offset
        close = np.all(np.abs(points[a, 1:] - points[b, 1:]) <= radius, axis=1)
        pa, pb = positions[a][close], positions[b][close]
        found.append(np.stack([np.minimum(pa, pb), np.maximum(pa, pb)], axis=1))
        offset += 1
        active = a[left[a] > offset]
    return np.concatenate(found)


def _sort_key(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """One uint64 that sorts as (code, value) for 32-bit codes and float32 values."""
    bits = values.astype(np.float32).view(np.uint32)
    ordered = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))  # negative floats reversed, below positive
    return (codes.astype(np.uint64) << np.uint64(32)) | ordered.astype(np.uint64)
