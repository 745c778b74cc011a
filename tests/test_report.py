"""`ducho report`: known answers for the statistics (k-NN accuracy, duplicates, NaN rows, constant dimensions), every
output format read alike, a real run reported through the command line, and the page opened in headless Chromium
(no console error, no network request, one point per sampled record, neighbour tables, a screenshot)."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tsv
from ducho.ids import safe_stem
from ducho.layer_files import find_layers, open_records
from ducho.report import write_report
from ducho.report_stats import analyse, knn_accuracy, neighbour_lists, neighbour_overlap, unit_rows

FORMATS = ["npy", "matrix", "sparse", "parquet"]


def write_layer(folder: Path, fmt: str, ids: list[str], matrix: np.ndarray, users: list[str] | None = None,
                **manifest: object) -> Path:
    """A layer folder in the layout the writers use, with a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(matrix, np.float32)
    if fmt == "npy":
        for index, item in enumerate(ids):
            stem = safe_stem(item) if users is None else f"{safe_stem(users[index])}__{safe_stem(item)}"
            np.save(folder / f"{stem}.npy", matrix[index])
    elif fmt in ("matrix", "sparse"):
        lines = ["item"] + ids if users is None else ["user\titem"] + [f"{u}\t{i}" for u, i in zip(users, ids)]
        (folder / "ids.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if fmt == "matrix":
            np.save(folder / "features.npy", matrix)
        else:
            from scipy import sparse

            sparse.save_npz(folder / "features.npz", sparse.csr_matrix(matrix))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        (folder / "shards").mkdir(exist_ok=True)
        width = matrix.shape[1]
        half = len(ids) // 2
        for part, (lo, hi) in enumerate([(0, half), (half, len(ids))]):
            columns = {"id": pa.array(ids[lo:hi])} if users is None else \
                {"user": pa.array(users[lo:hi]), "item": pa.array(ids[lo:hi])}
            columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(matrix[lo:hi].reshape(-1)), width)
            table = pa.table(columns).replace_schema_metadata({b"ducho.shape": json.dumps([width]).encode()})
            pq.write_table(table, folder / "shards" / f"part-{part:05d}.parquet")
    facts = {"status": "complete", "format": fmt, "modality": "visual", "source": "items" if users is None else
             "interactions", "layer": folder.name, "shape": [matrix.shape[1]], "count": len(ids),
             "model_settings": {"model_name": "test/model"}, **manifest}
    (folder / "manifest.json").write_text(json.dumps(facts), encoding="utf-8")
    return folder


def planted(n: int, dim: int = 24, seed: int = 0) -> tuple[np.ndarray, dict[str, object]]:
    """Random rows with known defects: exact copies, a near duplicate (and a close non-duplicate), NaN, Inf and
    all-zero rows, two constant dimensions."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, dim)).astype(np.float32)
    far = n - 1
    m[[5, far]] = m[3]  # exact copies of row 3
    m[10] = m[n // 2] + 1e-4 * rng.normal(size=dim).astype(np.float32)  # cosine ~ 1 - 1e-9
    m[12] = 3 * m[n // 2 + 1]  # same direction: cosine 1, not identical
    m[30] = m[31] + 0.1 * rng.normal(size=dim).astype(np.float32)  # cosine ~ 0.995: not a near duplicate
    m[:, [3, 7]] = 0.0
    m[20, 1] = np.nan
    m[21, 2] = np.inf
    m[22] = 0.0
    return m, {"exact": [[3, 5, far]], "near": sorted([[10, n // 2], [12, n // 2 + 1]]), "bad": [20, 21],
               "zero": 1, "constant": [3, 7]}


def page_data(page: str) -> dict:
    """The data the page's script draws from."""
    return json.loads(re.search(r'id="ducho-data">(.*?)</script>', page, re.S).group(1))


class ArrayLayer:
    """A layer on disk (matrix format) made from a matrix, for the statistics tests."""

    def __init__(self, tmp_path: Path, matrix: np.ndarray, fmt: str = "matrix") -> None:
        self.ids = [f"r{i:05d}" for i in range(len(matrix))]
        folder = write_layer(tmp_path / fmt / "emb", fmt, self.ids, matrix)
        self.vectors = open_records(find_layers([folder.parent])[0])


@pytest.mark.parametrize("n, sample", [(300, 2000), (3000, 200)])
def test_planted_duplicates_nan_rows_and_constant_dimensions_are_found(tmp_path: Path, n: int, sample: int) -> None:
    matrix, expected = planted(n)
    layer = ArrayLayer(tmp_path, matrix)
    stats = analyse(layer.vectors, sample=sample)
    assert (stats.count, stats.dim) == (n, 24)
    assert stats.exact.largest == expected["exact"] and stats.exact.count == 1
    assert sorted(stats.near.largest) == expected["near"] and stats.near.count == 2
    assert stats.near.scope == "all records" and stats.exact.scope == "all records"  # not only the sample
    assert (stats.nan_rows, stats.inf_rows, stats.zero_rows) == (1, 1, expected["zero"])
    assert stats.bad_examples == expected["bad"]
    assert stats.constant_dims == expected["constant"]
    assert sum(stats.norm_counts) == n - 2  # every finite row, streamed
    assert len(stats.sample) == min(n, sample) - (3 if n <= sample else 0)  # NaN, Inf, zero rows are not sampled
    assert stats.projections["PCA"].shape == (len(stats.sample), 2)


def test_a_wide_layer_samples_fewer_records_by_the_same_id_hash(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho import report_stats

    monkeypatch.setattr(report_stats, "SAMPLE_BYTES", 200 * 64 * 4)  # room for 200 rows of 64 floats
    layer = ArrayLayer(tmp_path, np.random.default_rng(7).normal(size=(1000, 64)).astype(np.float32))
    stats = analyse(layer.vectors, sample=500)
    assert stats.sample.tolist() == report_stats.sample_positions(layer.ids, 200).tolist()
    assert any("sample cut to 200" in note for note in stats.notes)


def test_labels_are_read_by_column_and_interactions_fall_back_to_their_item(tmp_path: Path) -> None:
    from ducho.report_media import Labels, label_of, read_labels

    write_tsv(tmp_path / "l.tsv", ["name", "item", "kind"], [["x", "i1", "shoe"], ["y", "i2", ""], ["z", "i3", "hat"]])
    labels = read_labels(tmp_path / "l.tsv")
    assert labels == {"i1": "shoe", "i3": "hat"}  # ids from the column named item, labels from the last, empty ones out
    on_disk = Labels(tmp_path / "l.tsv")  # the report's: only the labels asked for are kept
    assert on_disk.count == 2 and on_disk.of(["i3", "i2", "i9"]) == {"i3": "hat"}
    assert label_of(labels, "u9__i1", "i1") == "shoe" and label_of(labels, "i2", "i2") is None
    (tmp_path / "l.csv").write_text("id,group,colour\na,g1,red\nb,g2,blue\n")
    assert read_labels(tmp_path / "l.csv", "group") == {"a": "g1", "b": "g2"}
    with pytest.raises(ValueError, match="no column 'size'"):
        read_labels(tmp_path / "l.csv", "size")


@pytest.mark.parametrize("on_disk", [False, True])
def test_duplicates_outside_the_sample_are_found_among_all_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   on_disk: bool) -> None:
    """5000 records, 500 sampled: a near-duplicate pair at cosine 0.9995 and an exact pair, none of them sampled, are
    found; a pair at cosine 0.998 is not. On disk: partitions of a few KB (many partition files per search)."""
    from ducho import report_duplicates, report_scratch, report_stats

    if on_disk:
        monkeypatch.setattr(report_scratch, "PART_BYTES", 16 << 10)
        monkeypatch.setattr(report_duplicates, "PART_BYTES", 16 << 10)
        monkeypatch.setattr(report_duplicates, "SKEW", 10**6)  # tiny partitions: no signature is crowded
    rng = np.random.default_rng(9)
    matrix = rng.normal(size=(5000, 32)).astype(np.float32)
    ids = [f"r{i:05d}" for i in range(5000)]
    outside = np.setdiff1d(np.arange(5000), report_stats.sample_positions(ids, 500))[[10, 2000, 3000, 4000, 4300, 4499]]
    near, far, exact = outside[:2], outside[2:4], outside[4:]
    matrix[near[1]] = _at_cosine(matrix[near[0]], 0.9995, rng)
    matrix[far[1]] = _at_cosine(matrix[far[0]], 0.998, rng)
    matrix[exact[1]] = matrix[exact[0]]
    stats = analyse(ArrayLayer(tmp_path, matrix).vectors, sample=500)
    assert len(stats.sample) == 500 and not set(outside.tolist()) & set(stats.sample.tolist())
    assert (stats.near.count, stats.near.records, stats.near.scope) == (1, 2, "all records")
    assert stats.near.largest == [sorted(near.tolist())]
    assert (stats.exact.count, stats.exact.records, stats.exact.largest) == (1, 2, [sorted(exact.tolist())])
    norms = np.linalg.norm(matrix, axis=1)
    expected = dict(zip(["min", "p1", "median", "p99", "max"], np.percentile(norms, [0, 1, 50, 99, 100])))
    assert stats.norm_summary == pytest.approx({**expected, "mean": norms.mean()}, rel=1e-6)


def _at_cosine(vector: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A vector at exactly `cosine` from `vector`, of the same norm."""
    unit = vector / np.linalg.norm(vector)
    other = rng.normal(size=len(vector))
    other -= (other @ unit) * unit
    other /= np.linalg.norm(other)
    return (np.linalg.norm(vector) * (cosine * unit + np.sqrt(1 - cosine**2) * other)).astype(np.float32)


def test_order_statistics_and_positions_read_back_from_scratch_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho import report_scratch

    monkeypatch.setattr(report_scratch, "READ_BYTES", 400)  # 100 values a chunk
    rng = np.random.default_rng(11)
    values = np.concatenate([np.abs(rng.standard_cauchy(3000)), np.zeros(50), np.full(200, 1.5), [1e-40, 3e38]])
    values = rng.permutation(values).astype(np.float32)
    ranks = np.array([0, 1, 49, 50, 51, 1500, 2999, len(values) - 1])
    with report_scratch.Scratch() as scratch:
        column = scratch.column("values", np.float32)
        column.append(values[:1000])
        column.append(values[1000:])
        assert report_scratch.order_statistics(column, ranks).tolist() == np.sort(values)[ranks].tolist()
        positions = np.array([3, 99, 100, 999, 1000, len(values) - 1])
        assert column.take(positions).tolist() == values[positions].tolist()


def test_scratch_files_are_removed_after_an_analysis_and_after_an_error(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from ducho import report_stats

    layer = ArrayLayer(tmp_path / "layer", np.random.default_rng(10).normal(size=(900, 8)).astype(np.float32))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    seen: list[list[str]] = []
    exact_groups = report_stats.exact_groups

    def spy(*args: object) -> object:
        seen.append(sorted(p.name.split("-", 1)[1] for p in next((tmp_path / "tmp").iterdir()).iterdir()))
        return exact_groups(*args)

    monkeypatch.setattr(report_stats, "exact_groups", spy)
    assert analyse(layer.vectors, sample=100).count == 900
    assert seen == [["exact", "hashes", "norms"]] and not any((tmp_path / "tmp").iterdir())

    def broken(*args: object) -> object:
        raise OSError("disk full")

    monkeypatch.setattr(report_stats, "near_everywhere", broken)
    with pytest.raises(OSError, match="disk full"):
        analyse(layer.vectors, sample=100)
    assert not any((tmp_path / "tmp").iterdir())


def test_neighbours_are_the_exact_nearest_among_all_records(tmp_path: Path) -> None:
    matrix = np.random.default_rng(1).normal(size=(2500, 16)).astype(np.float32)
    layer = ArrayLayer(tmp_path, matrix)
    stats = analyse(layer.vectors, sample=100)  # the neighbours come from the second, streamed pass
    unit = unit_rows(matrix)
    assert len(stats.neighbours) == 12
    for query, found in stats.neighbours:
        sims = unit @ unit[query]
        sims[query] = -np.inf
        best = np.argsort(-sims)[:5]
        assert [p for p, _ in found] == best.tolist()
        np.testing.assert_allclose([c for _, c in found], sims[best], rtol=1e-5)


def test_knn_accuracy_is_near_one_for_separated_clusters_and_near_chance_for_random_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    labels = ["a" if i % 2 else "b" for i in range(400)]
    clusters = rng.normal(size=(400, 16)).astype(np.float32)
    clusters[:, 0] += np.where(np.array(labels) == "a", 6.0, -6.0)
    separated = analyse(ArrayLayer(tmp_path / "c", clusters).vectors)
    result = knn_accuracy(separated.unit, [labels[p] for p in separated.sample])
    assert result is not None and result["accuracy"] >= 0.98 and result["records"] == 400
    noise = analyse(ArrayLayer(tmp_path / "r", rng.normal(size=(400, 16)).astype(np.float32)).vectors)
    chance = knn_accuracy(noise.unit, [labels[p] for p in noise.sample])
    assert chance is not None and 0.35 <= chance["accuracy"] <= 0.65 and chance["baseline"] == 0.5
    assert knn_accuracy(noise.unit, [None] * len(noise.sample)) is None  # no labels, no score


def test_neighbour_overlap_is_one_for_the_same_vectors_and_near_chance_for_unrelated_ones() -> None:
    rng = np.random.default_rng(3)
    ids = [f"x{i}" for i in range(300)]
    a = unit_rows(rng.normal(size=(300, 16)))
    b = unit_rows(rng.normal(size=(300, 16)))
    same = neighbour_overlap(ids, neighbour_lists(a), ids[::-1], neighbour_lists(a[::-1].copy()))
    assert same is not None and same["overlap"] == 1.0 and same["records"] == 300
    unrelated = neighbour_overlap(ids, neighbour_lists(a), ids, neighbour_lists(b))
    assert unrelated is not None and unrelated["overlap"] < 0.1 and unrelated["chance"] == pytest.approx(5 / 299)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("interactions", [False, True])
def test_every_format_reads_the_same_records_in_chunks_and_by_position(tmp_path: Path, fmt: str,
                                                                       interactions: bool) -> None:
    matrix = np.random.default_rng(4).normal(size=(37, 6)).astype(np.float32)
    matrix[4] = 0.0
    items = [f"it/{i}" if i % 5 == 0 else f"i{i}" for i in range(37)]  # "/" is percent-encoded in npy names
    users = [f"u{i % 4}" for i in range(37)] if interactions else None
    order = sorted(range(37), key=lambda i: safe_stem(items[i]) if users is None else
                   f"{safe_stem(users[i])}__{safe_stem(items[i])}") if fmt == "npy" else list(range(37))
    write_layer(tmp_path / "out" / "layer", fmt, items, matrix, users)
    vectors = open_records(find_layers([tmp_path])[0])
    assert vectors.items == [items[i] for i in order]
    expected_ids = [items[i] if users is None else f"{users[i]}__{items[i]}" for i in order]
    assert vectors.ids == expected_ids
    read = np.concatenate([block for _, block in vectors.chunks(8)])
    np.testing.assert_array_equal(read, matrix[order])
    positions = np.array([30, 2, 17, 2])
    np.testing.assert_array_equal(vectors.rows(positions), matrix[order][positions])
    assert vectors.dim() == 6


def test_multi_dimensional_records_become_vectors(tmp_path: Path) -> None:
    tokens = [np.random.default_rng(i).normal(size=(3 + i, 4)).astype(np.float32) for i in range(3)]
    folder = tmp_path / "tokens" / "last_hidden_state"
    folder.mkdir(parents=True)
    for i, array in enumerate(tokens):
        np.save(folder / f"t{i}.npy", array)
    (folder / "manifest.json").write_text(json.dumps({"format": "npy", "shape": ["steps", 4]}))
    vectors = open_records(find_layers([tmp_path])[0])
    np.testing.assert_allclose(np.concatenate([b for _, b in vectors.chunks(2)]),
                               np.stack([t.mean(axis=0) for t in tokens]), rtol=1e-6)
    assert "mean-pooled over their steps" in vectors.note


def _images(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.zeros((40, 60, 3), np.uint8)
        pixels[..., 0 if i % 2 else 2] = 120 + i
        Image.fromarray(pixels).save(folder / f"p{i:03d}.png")


def test_a_real_run_reported_from_the_command_line(tmp_path: Path) -> None:
    """ducho.run writes an image layer (with a failure) and a text layer of the same items; `ducho report` shows the
    failure grouped, both manifests, k-NN accuracy per layer and the neighbour agreement between the modalities."""
    import ducho
    from ducho.cli import main

    _images(tmp_path / "images", 12)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    write_tsv(tmp_path / "items.tsv", ["item", "description", "category"],
              [[f"p{i:03d}", ("blue sky ocean water" if i % 2 else "red apple cherry tomato") + f" {i}",
                "blue" if i % 2 else "red"] for i in range(12)])
    colour = {"model_name": "colour", "backend": "handcrafted", "output_layers": ["hsv_histogram"]}
    tfidf = {"model_name": "tfidf", "backend": "handcrafted", "output_layers": ["tfidf"]}
    ducho.run({"dataset_path": str(tmp_path), "format": "matrix", "workers": 0,
               "visual": {"items": {"input_path": "images", "output_path": "features/images", "model": [colour]}},
               "textual": {"items": {"input_path": "items.tsv", "output_path": "features/texts", "item_column": "item",
                                     "text_column": "description", "model": [tfidf]}}}, progress=False)
    out = tmp_path / "page.html"
    assert main(["report", str(tmp_path), "-o", str(out), "--labels", str(tmp_path / "items.tsv"),
                 "--label-column", "category", "--sample", "50"]) == 0
    page = out.read_text(encoding="utf-8")
    data = page_data(page)
    assert len(data["layers"]) == 2 and all(len(layer["ids"]) == 12 for layer in data["layers"])
    assert "Skipped records (1), by reason" in page and "DecodeError: not a recognised image" in page
    assert "colour / hsv_histogram" in page and "tfidf / tfidf" in page
    knn = re.search(r'<table id="knn">.*?</table>', page, re.S).group(0)
    assert knn.count("<tr>") == 3  # header + both layers
    assert re.search(r'<table id="overlap">.*?<td>12</td>', page, re.S)
    kinds = {"img" if "img" in p else "text" for p in data["previews"]}
    assert kinds == {"img", "text"}  # thumbnails of the images, snippets of the texts
    assert main(["report", str(tmp_path / "nothing-here")]) == 2  # a folder without layers is an error


def test_the_page_stays_small_for_many_records(tmp_path: Path) -> None:
    matrix = np.random.default_rng(5).normal(size=(20000, 64)).astype(np.float32)
    write_layer(tmp_path / "big" / "emb", "matrix", [f"r{i}" for i in range(20000)], matrix)
    page = write_report(tmp_path, tmp_path / "r.html", sample=500)
    assert page.stat().st_size < 400_000  # the sample sets the size, not the records
    data = page_data(page.read_text())
    assert len(data["layers"][0]["ids"]) == 500


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The page's data for one layer of two well-separated labelled clusters (400 records, 300 sampled): one report,
    so one UMAP run (the first in a process imports umap-learn, 5 s, and the first ever compiles it, 15 s more)."""
    root = tmp_path_factory.mktemp("clusters")
    rng = np.random.default_rng(8)
    labels = ["a" if i % 2 else "b" for i in range(400)]
    matrix = rng.normal(size=(400, 32)) + np.where(np.array(labels)[:, None] == "a", 5.0, -5.0) * np.eye(1, 32)
    ids = [f"c{i:03d}" for i in range(400)]
    write_layer(root / "out" / "emb", "matrix", ids, matrix)
    write_tsv(root / "labels.tsv", ["item", "cluster"], [[i, c] for i, c in zip(ids, labels)])
    page = write_report(root, root / "r.html", labels=root / "labels.tsv", sample=300)
    return page_data(page.read_text(encoding="utf-8"))["layers"][0]


def test_umap_has_a_point_per_sampled_record_and_keeps_separated_clusters_apart(two_clusters: dict) -> None:
    assert sorted(two_clusters["views"]) == ["PCA", "UMAP"]  # umap-learn is a dev dependency: this is no skip
    points = np.array(two_clusters["views"]["UMAP"], float).reshape(-1, 2)
    assert len(points) == len(two_clusters["ids"]) == 300
    assert points.tolist() != np.array(two_clusters["views"]["PCA"], float).reshape(-1, 2).tolist()
    labels = np.array(two_clusters["labels"])
    assert set(labels) == {"a", "b"}
    a, b = points[labels == "a"], points[labels == "b"]
    gap = np.linalg.norm(a[:, None] - b[None], axis=2).min()  # the closest pair across the clusters

    def spacing(group: np.ndarray) -> float:
        distances = np.linalg.norm(group[:, None] - group[None], axis=2) + np.diag(np.full(len(group), np.inf))
        return float(np.median(distances.min(axis=1)))

    assert gap > 5 * max(spacing(a), spacing(b))  # two islands, far apart against the spacing within each


def test_help_of_report_loads_no_numerical_library() -> None:
    code = ("import sys\nfrom ducho.cli import main\ntry:\n    main(['report', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('numpy', 'torch', 'tensorflow', 'pyarrow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "--label-column" in done.stdout and done.stdout.strip().endswith("[]")


def test_config_has_a_report_switch() -> None:
    from ducho.config.schema import Config

    assert Config().report is False and Config(report=True).report is True


# ------------------------------------------------------------------------------------------------- in Chromium


def _chromium():
    """The page tests need Debian's chromium and websocket-client, which `make test` installs: missing, they fail."""
    import chromium_page

    assert chromium_page.chromium() is not None, "Debian's chromium is not installed (make install installs it)"
    return chromium_page


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_the_page_in_chromium_has_no_errors_no_requests_and_a_point_per_sampled_record(tmp_path: Path) -> None:
    chromium_page = _chromium()
    root = tmp_path / "run"
    _images(root / "images", 60)
    labels = ["red" if i % 2 == 0 else "blue" for i in range(60)]
    ids = [f"p{i:03d}" for i in range(60)]
    write_tsv(root / "items.tsv", ["item", "description"], [[i, f"a {c} thing, number {i}"] for i, c in
                                                             zip(ids, labels)])
    write_tsv(root / "labels.tsv", ["item", "category"], [[i, c] for i, c in zip(ids, labels)])
    rng = np.random.default_rng(6)
    centres = np.where(np.array(labels)[:, None] == "red", 4.0, -4.0) * np.eye(1, 32)
    image_layer = write_layer(root / "features/images/torch/net/pool", "npy", ids,
                              centres + rng.normal(size=(60, 32)), input=str(root / "images"),
                              source_settings={"input_path": "images", "output_path": "features/images"})
    (image_layer.parent / "failures.tsv").write_text(
        "id\tsource\treason\nq1\tq1.jpg\tDecodeError: not a recognised image\n"
        "q2\tq2.jpg\tDecodeError: not a recognised image\nq3\tq3.gif\tnot an image file (.gif)\n")
    write_layer(root / "features/texts/transformers/bert/cls", "parquet", ids, rng.normal(size=(60, 16)),
                modality="textual", input=str(root / "items.tsv"),
                source_settings={"input_path": "items.tsv", "item_column": "item", "text_column": "description"})
    write_layer(root / "features/more/torch/net/pool", "matrix", [f"m{i}" for i in range(300)],
                rng.normal(size=(300, 8)))
    page = write_report(root, tmp_path / "report.html", labels=root / "labels.tsv", sample=100)

    shot = tmp_path / "artifacts" / "report.png"
    checks = ["document.querySelectorAll('.proj svg[data-view=PCA] circle').length",
              "Array.from(document.querySelectorAll('.proj')).map(p => p.querySelector('svg').querySelectorAll("
              "'circle').length === Number(p.dataset.expected)).every(Boolean)",
              "document.querySelectorAll('table.neighbours tbody tr').length",
              "document.querySelectorAll('table.neighbours .rec img').length",
              "document.querySelectorAll('table.neighbours .snip').length",
              "(function(){var c=document.querySelector('#layer-0 .proj circle');c.dispatchEvent(new MouseEvent("
              "'mouseover',{bubbles:true}));var t=document.getElementById('tip');return !t.hidden && "
              "t.querySelectorAll('img').length;})()",
              "document.documentElement.dataset.points", "document.documentElement.dataset.errors",
              "document.querySelectorAll('#knn tbody tr').length",
              "Array.from(document.querySelectorAll('.proj')).map(p => p.querySelectorAll('svg[data-view=UMAP] "
              "circle').length === Number(p.dataset.expected)).every(Boolean)"]
    run = chromium_page.open_page(page, shot, checks)
    values = [run.values[c] for c in checks]
    assert run.errors == [] and values[7] == "0"
    assert run.requests and run.network == []  # it loaded, and nothing but the file and inline data
    assert values[0] == 60 + 60 + 100 and values[6] == "220" and values[1] is True  # one point per sampled record
    assert values[2] == 3 * 12 and values[3] > 0 and values[4] > 0  # neighbours with thumbnails and snippets
    assert values[5] == 1  # hovering a point of the image layer shows its thumbnail
    assert values[9] is True  # the UMAP view (hidden behind its button) has one point per sampled record too
    assert values[8] == 2  # k-NN accuracy for the two labelled layers (the third one's ids have no label)
    assert _png_size(shot) == (1280, 2400) and shot.stat().st_size > 20_000


def test_the_chromium_check_sees_requests_and_errors(tmp_path: Path) -> None:
    """The harness itself: a page that asks the network (loopback, refused) and logs an error is caught."""
    chromium_page = _chromium()
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><body><img src=\"http://127.0.0.1:9/x.png\"><script>console.error('boom');"
                    "document.documentElement.dataset.ready='1';</script></body></html>")
    run = chromium_page.open_page(page, tmp_path / "bad.png", [])
    assert run.network == ["http://127.0.0.1:9/x.png"]
    assert any("boom" in e for e in run.errors)


def test_a_run_with_report_true_writes_the_page(tmp_path: Path) -> None:
    import ducho

    write_tsv(tmp_path / "t.tsv", ["item", "text"], [["a", "red apple"], ["b", "blue sea"], ["c", "red cherry"]])
    ducho.run({"dataset_path": str(tmp_path), "report": True, "textual": {"items": {"input_path": "t.tsv",
               "output_path": "f", "model": [{"model_name": "tfidf", "backend": "handcrafted",
                                              "output_layers": ["tfidf"]}]}}}, progress=False)
    assert "tfidf / tfidf" in (tmp_path / "report.html").read_text()
