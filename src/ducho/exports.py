"""`ducho export FOLDER --to elliot|mmrec|cornac|parquet`: a run's features in the layout a recommender reads.

FOLDER is a layer folder of a run (it holds the run's manifest.json) or any folder above it: then every layer folder
under it is exported, each on its own (export folders found there are passed over). An export goes to
`<layer>/export-<to>/`, or to `--output` (with several layers: `--output/<the layer's path under FOLDER>`), with a
manifest.json of its own: the run's fingerprint, model and layer, the mapping file's sha256, the counts, the ids left
unmatched on either side and the dtype. Unmatched ids are never dropped or shifted in silence: they are listed there
and counted in a log line. A re-export replaces what the previous export wrote in that folder, and nothing else.

- `elliot` (items): `features/<int id>.npy`, the ids from `--mapping` (raw id -> int, tab-separated, a header) or
  consecutive ints in row order with `item_mapping.tsv` written beside; `--pca K` adds `pca<K>/<int id>.npy`, a
  PCA fitted on the items exported. The feature folders hold nothing else: Elliot parses every file name as an int.
- `mmrec` (items, one vector each): `--name` (e.g. image_feat.npy; by default from the modality), the matrix
  (n_items, d) whose row i is itemID i of `--mapping` (MMRec's i_id_mapping.csv; itemIDs 0..n-1); items without a
  feature get the mean of the others, as MMRec's preprocessing does, and are listed in `<name>_missing.csv`.
- `cornac` (items, one vector each): `features.npy` (n, d) and `ids.txt`, one raw id per line aligned with its rows;
  `cornac_modality(folder, kind)` builds Cornac's ImageModality / TextModality / FeatureModality from them.
- `parquet` (items or interactions): `shards/part-NNNNN.parquet` as `format: parquet` writes them.

`--dtype float16` halves the files (every target accepts it: Elliot and MMRec load them as float32, Cornac's VBPR
casts them, pyarrow and pandas keep float16, `datasets` types the column float16 and its numpy format hands float32
back); the default is the run's dtype.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import DuchoError
from .ids import RecordKey
from .layer_files import Layer, Records, find_layers, open_records
from .writers import DTYPES, MANIFEST, cast, read_manifest, save_npy, write_manifest, write_text

log = logging.getLogger("ducho")

TARGETS = ("elliot", "mmrec", "cornac", "parquet")
MMREC_NAMES = {"visual": "image_feat.npy", "textual": "text_feat.npy", "audio": "audio_feat.npy"}


@dataclass(frozen=True)
class Mapping:
    """A two-column, tab-separated file with a header: raw id -> int id (MMRec's i_id_mapping.csv)."""

    path: Path
    sha256: str
    columns: tuple[str, str]
    ids: dict[str, int]  # in file order

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "sha256": self.sha256, "columns": list(self.columns),
                "rows": len(self.ids)}


@dataclass
class Export:
    """One layer exported: where, how many rows, what was left unmatched, and its manifest."""

    layer: Path
    folder: Path
    to: str
    manifest: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        line = f"{self.layer} -> {self.folder} ({self.to}, {self.manifest['dtype']}): {self.manifest['count']} rows"
        if self.manifest["mapping"] is None:
            return line
        unmatched = self.manifest["unmatched"]
        filled = self.manifest.get("filled_with_mean")
        return (f"{line}; {len(unmatched['features_without_mapping'])} feature id(s) not in the mapping (not "
                f"exported), {len(unmatched['mapping_without_features'])} mapping id(s) without a feature"
                + (f" (filled with the mean: {filled})" if filled is not None else " (no file)"))


def export(folder: str | Path, to: str, *, mapping: str | Path | None = None, name: str | None = None,
           output: str | Path | None = None, dtype: str | None = None, pca: int | None = None) -> list[Export]:
    """Export every layer folder at or under `folder` (see the module's docstring); checks them all first."""
    if to not in TARGETS:
        raise DuchoError(f"--to {to!r}: accepted are {', '.join(TARGETS)}")
    if dtype is not None and dtype not in DTYPES:
        raise DuchoError(f"--dtype {dtype!r}: accepted are {', '.join(DTYPES)}")
    if mapping is not None and to not in ("elliot", "mmrec"):
        raise DuchoError(f"--mapping is for elliot and mmrec; {to} keeps the raw ids")
    if to == "mmrec" and mapping is None:
        raise DuchoError("--to mmrec needs --mapping (MMRec's i_id_mapping.csv: raw id, itemID)")
    if pca is not None and (to != "elliot" or pca < 1):
        raise DuchoError("--pca K (K >= 1) is for elliot")
    if name is not None and (to != "mmrec" or Path(name).name != name or not name.endswith(".npy")):
        raise DuchoError(f"--name {name!r} is for mmrec: a file name ending in .npy (e.g. image_feat.npy)")
    root = Path(folder).expanduser().resolve()
    layers = [_open(layer) for layer in run_layers(root)]
    for layer in layers:
        _check(layer, to, name, pca)
    table = read_mapping(Path(mapping).expanduser()) if mapping is not None else None
    if table is not None and to == "mmrec" and sorted(table.ids.values()) != list(range(len(table.ids))):
        raise DuchoError(f"{table.path}: MMRec's itemIDs run 0..n-1 once each; this mapping's do not")
    results = []
    for layer in layers:
        place = _output(root, layer.folder, to, output, len(layers))
        results.append(_export_one(layer, to, place, table, name, dtype or layer.manifest.get("dtype", "float32"), pca))
    return results


def run_layers(root: Path) -> list[Layer]:
    """`root` when it is a layer folder of a run, otherwise every one under it (export folders passed over)."""
    inside_export = any("export" in (read_manifest(parent) or {}) for parent in root.parents)
    found = [] if inside_export else [layer for layer in find_layers([root])
                                      if "format" in layer.manifest and "export" not in layer.manifest]
    if not found:
        raise DuchoError(f"{root}: no layer folder of a run (a folder with a run's {MANIFEST}) at or under it")
    return found


def _open(layer: Layer) -> Records:
    if layer.manifest.get("status") != "complete":
        raise DuchoError(f"{layer.folder}: the run has not finished (manifest status "
                         f"{layer.manifest.get('status')!r}); run it to the end first")
    return open_records(layer)


def read_mapping(path: Path) -> Mapping:
    """Parse a mapping file; an error on a missing header, a non-integer or negative id, or an id given twice."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DuchoError(f"--mapping {path}: {error.strerror or error}") from error
    rows = [row for row in csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter="\t") if row]
    if not rows or len(rows[0]) < 2 or rows[0][1].strip().lstrip("-").isdigit():
        raise DuchoError(f"{path}: the first line must be a header of two tab-separated columns (raw id, int id), "
                         "as MMRec's i_id_mapping.csv: asin<TAB>itemID")
    ids: dict[str, int] = {}
    taken: dict[int, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or not row[1].strip().isdigit():
            raise DuchoError(f"{path}, line {line}: expected a raw id, a tab and a non-negative integer id; got {row}")
        raw, number = row[0], int(row[1])
        if raw in ids:
            raise DuchoError(f"{path}, line {line}: id {raw!r} is mapped twice")
        if number in taken:
            raise DuchoError(f"{path}, line {line}: int id {number} is given to {taken[number]!r} and {raw!r}")
        ids[raw], taken[number] = number, raw
    return Mapping(path, hashlib.sha256(data).hexdigest(), (rows[0][0], rows[0][1]), ids)


def _check(layer: Records, to: str, name: str | None, pca: int | None) -> None:
    """Refuse, before anything is written, a layer the target cannot take."""
    where = f"{layer.folder} ({layer.manifest.get('source')}, shape {layer.shape})"
    if layer.interactions and to != "parquet":
        raise DuchoError(f"{where}: {to} reads one vector per item, not per (user, item) interaction; export "
                         "interactions --to parquet")
    if to in ("mmrec", "cornac") and len(layer.shape) != 1:
        raise DuchoError(f"{where}: {to} reads one vector per item; pool the layer (e.g. pooling: avg)")
    if to == "parquet" and layer.shape[:1] == ["steps"]:
        raise DuchoError(f"{where}: parquet needs one shape per record; pool the layer")
    if pca is not None and len(layer.shape) != 1:
        raise DuchoError(f"{where}: --pca needs one vector per item")
    if to == "mmrec" and name is None and layer.manifest.get("modality") not in MMREC_NAMES:
        raise DuchoError(f"{where}: give --name (e.g. image_feat.npy or text_feat.npy)")


def _output(root: Path, layer: Path, to: str, output: str | Path | None, count: int) -> Path:
    if output is None:
        return layer / f"export-{to}"
    base = Path(output).expanduser()
    return base if count == 1 else base / layer.relative_to(root)


def _export_one(layer: Records, to: str, place: Path, table: Mapping | None, name: str | None, dtype: str,
                pca: int | None) -> Export:
    _clear(place)
    entries = _entries(to, layer, name, pca)
    write_manifest(place, {"export": to, "status": "running", "entries": entries})  # cleared by the next export
    target = {"elliot": _elliot, "mmrec": _mmrec, "cornac": _cornac, "parquet": _parquet}[to]
    written = target(layer, place, table, DTYPES[dtype], name=name or _mmrec_name(layer), pca=pca)
    unmatched = {"features_without_mapping": written.pop("features_without_mapping", []),
                 "mapping_without_features": written.pop("mapping_without_features", [])}
    source = layer.manifest
    manifest = {
        "export": to, "status": "complete", "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ducho_version": __version__, "dtype": dtype, "entries": entries, "unmatched": unmatched,
        "mapping": table.describe() if table is not None else None,
        "source": {"folder": str(layer.folder.resolve()), **{key: source.get(key) for key in (
            "fingerprint", "model", "layer", "computed_layer", "modality", "source", "format", "dtype", "shape",
            "count", "input", "input_sha256", "written_at")}},
        **written,
    }
    write_manifest(place, manifest)
    result = Export(layer.folder, place, to, manifest)
    log.info("export %s", result.summary())
    if unmatched["features_without_mapping"] or unmatched["mapping_without_features"]:
        log.warning("export %s: unmatched ids are listed in %s (unmatched)", place, place / MANIFEST)
    return result


def _entries(to: str, layer: Records, name: str | None, pca: int | None) -> list[str]:
    """What an export writes in its folder besides the manifest (what the next export there removes)."""
    if to == "elliot":
        return ["features", "item_mapping.tsv", *([f"pca{pca}"] if pca is not None else [])]
    if to == "mmrec":
        name = name or _mmrec_name(layer)
        return [name, f"{name[:-4]}_missing.csv"]
    return ["features.npy", "ids.txt"] if to == "cornac" else ["shards"]


def _mmrec_name(layer: Records) -> str:
    return MMREC_NAMES.get(layer.manifest.get("modality", ""), "")


def _clear(place: Path) -> None:
    """Remove what an earlier export wrote at `place` (the entries its manifest lists); refuse any other folder."""
    if not place.exists():
        place.mkdir(parents=True)
        return
    previous = read_manifest(place)
    if previous is None or "export" not in previous:
        if place.is_dir() and not any(place.iterdir()):
            return
        raise DuchoError(f"{place} exists and is not an export folder; give an empty or new --output")
    for entry in [*previous.get("entries", []), MANIFEST]:
        if not isinstance(entry, str) or Path(entry).name != entry or entry in ("", ".", ".."):
            continue  # an entry names a file or folder of `place` itself, nothing elsewhere
        path = place / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _matched(layer: Records, table: Mapping) -> tuple[list[tuple[int, int]], dict[str, list[str]]]:
    """(int id, row) of each mapping id that has a feature, and the ids unmatched on either side."""
    pairs, without_feature = [], []
    for raw, number in table.ids.items():
        row = layer.row_of(RecordKey(raw))
        if row is None:
            without_feature.append(raw)
        else:
            pairs.append((number, row))
    used = {row for _, row in pairs}
    return pairs, {"features_without_mapping": [layer.label(r) for r in range(len(layer)) if r not in used],
                   "mapping_without_features": without_feature}


def _elliot(layer: Records, place: Path, table: Mapping | None, dtype: np.dtype, *, pca: int | None,
            **_: Any) -> dict[str, Any]:
    if table is not None:
        pairs, unmatched = _matched(layer, table)
    else:
        keys = layer.require_keys()
        pairs, unmatched = list(enumerate(range(len(keys)))), {}
        _write_tsv(place / "item_mapping.tsv", ["id", "itemID"], [[k.item, str(n)] for n, k in enumerate(keys)])
    features = place / "features"
    for number, row in pairs:
        save_npy(features / f"{number}.npy", cast(layer.record(row), dtype, layer.folder), dtype)
    written: dict[str, Any] = {
        "layout": "features/<int id>.npy, one per item" + ("" if table else "; item_mapping.tsv: raw id -> int id"),
        "count": len(pairs),
        "shape": layer.shape, **unmatched}
    if pca is not None:
        written["pca"] = _pca(layer, pairs, pca, place / f"pca{pca}", dtype)
        written["layout"] += f"; pca{pca}/<int id>.npy: PCA-reduced copies"
    return written


def _pca(layer: Records, pairs: Sequence[tuple[int, int]], k: int, folder: Path, dtype: np.dtype) -> dict[str, Any]:
    """Principal components of the exported items (covariance eigenvectors, float64; each component's sign set so
    that its largest entry is positive), and each item projected on the first `k`."""
    if not pairs:
        raise DuchoError(f"{layer.folder}: no item to fit --pca on")
    x = np.stack([np.asarray(layer.record(row), np.float64) for _, row in pairs])
    if k > min(x.shape):
        raise DuchoError(f"{layer.folder}: --pca {k} needs at least {k} items and {k} dimensions; has {x.shape}")
    mean = x.mean(axis=0)
    centred = x - mean
    variances, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(variances)[::-1][:k]
    components = vectors[:, order]
    components *= np.sign(components[np.abs(components).argmax(axis=0), range(k)])
    projected = centred @ components
    for (number, _), values in zip(pairs, projected):
        save_npy(folder / f"{number}.npy", cast(values, dtype, folder), dtype)
    total = float(np.clip(variances, 0, None).sum())
    return {"components": k, "fitted_on": len(pairs),
            "explained_variance_ratio": float(variances[order].sum() / total) if total else 0.0}


def _mmrec(layer: Records, place: Path, table: Mapping | None, dtype: np.dtype, *, name: str | None,
           **_: Any) -> dict[str, Any]:
    assert table is not None and name is not None
    pairs, unmatched = _matched(layer, table)
    if not pairs:
        raise DuchoError(f"{layer.folder}: none of its ids is in {table.path}; nothing to export")
    source = layer.matrix()
    numbers, rows = [number for number, _ in pairs], [row for _, row in pairs]
    matrix = np.empty((len(table.ids), source.shape[1]), dtype)
    matrix[numbers] = cast(source[rows], dtype, layer.folder)
    filled = sorted(set(range(len(table.ids))) - set(numbers))
    # the mean of the mapped items' vectors, as MMRec's preprocessing fills the items it has no feature for
    matrix[filled] = cast(np.asarray(source[rows], np.float64).mean(axis=0), dtype, layer.folder)
    save_npy(place / name, matrix, dtype)
    listing = f"{name[:-4]}_missing.csv"
    by_number = {number: raw for raw, number in table.ids.items()}
    _write_tsv(place / listing, ["itemID", table.columns[0]], [[str(n), by_number[n]] for n in filled])
    return {"layout": f"{name}: (n_items, d), row i = itemID i; {listing}: the itemIDs filled with the mean vector",
            "count": len(table.ids), "shape": [len(table.ids), int(source.shape[1])],
            "filled_with_mean": len(filled), **unmatched}


def _cornac(layer: Records, place: Path, table: Mapping | None, dtype: np.dtype, **_: Any) -> dict[str, Any]:
    keys = layer.require_keys()
    if any("\n" in key.item or "\r" in key.item for key in keys):
        raise DuchoError(f"{layer.folder}: an id holds a line break; ids.txt keeps one id per line")
    save_npy(place / "features.npy", cast(layer.matrix(), dtype, layer.folder), dtype)
    write_text(place / "ids.txt", "".join(f"{key.item}\n" for key in keys))
    return {"layout": "features.npy (n, d) and ids.txt, one raw id per line in the same row order",
            "count": len(keys), "shape": layer.shape}


def _parquet(layer: Records, place: Path, table: Mapping | None, dtype: np.dtype, **_: Any) -> dict[str, Any]:
    from . import parquet_writer as pw
    from .shards import SHARD
    from .writers import PARQUET_SHARDS

    keys = layer.require_keys()
    matrix = layer.matrix()
    width = int(np.prod(matrix.shape[1:]))
    if width == 0:
        raise DuchoError(f"{layer.folder}: parquet cannot store empty features (shape {layer.shape})")
    source = layer.manifest
    metadata = {pw.SHAPE: json.dumps(list(matrix.shape[1:])).encode(), pw.LAYER: layer.folder.name.encode(),
                pw.FINGERPRINT: str(source.get("fingerprint")).encode(),
                pw.INPUT: str(source.get("input_sha256")).encode()}
    parts = []
    for shard, start in enumerate(range(0, len(keys), SHARD)):
        chunk = keys[start:start + SHARD]
        ids = {"user": [str(k.user) for k in chunk], "item": [k.item for k in chunk]} if layer.interactions \
            else {"id": [k.item for k in chunk]}
        rows = cast(matrix[start:start + SHARD], dtype, layer.folder).reshape(len(chunk), width)
        parts.append(f"{PARQUET_SHARDS}/{pw.part_name(shard)}")
        pw.write_part(place / parts[-1], pw.vector_table(ids, rows, metadata))
    return {"layout": "shards/part-NNNNN.parquet, as format: parquet writes them",
            "count": len(keys), "shape": layer.shape, "shards": parts,
            "columns": ["user", "item", "vector"] if layer.interactions else ["id", "vector"]}


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Tab-separated with a header, fields quoted where needed as pandas and `read_mapping` read them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def cornac_modality(folder: str | Path, kind: str = "image") -> Any:
    """Cornac's modality for a `--to cornac` export: kind image (`ImageModality`, pass as item_image), text
    (`TextModality` with features and no corpus: item_text) or feature (`FeatureModality`: item_feature). Cornac
    aligns the rows to its own item indices by id when it builds the modality."""
    try:
        from cornac.data import FeatureModality, ImageModality, TextModality
    except ImportError as error:
        raise DuchoError("cornac_modality needs cornac: pip install cornac") from error
    classes = {"image": ImageModality, "text": TextModality, "feature": FeatureModality}
    if kind not in classes:
        raise DuchoError(f"kind {kind!r}: accepted are {', '.join(classes)}")
    folder = Path(folder).expanduser()
    if (read_manifest(folder) or {}).get("export") != "cornac":
        raise DuchoError(f"{folder} is not a --to cornac export (no export manifest)")
    ids = (folder / "ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
    return classes[kind](features=np.load(folder / "features.npy"), ids=ids)
