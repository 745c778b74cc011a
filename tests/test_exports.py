"""`ducho export` read back by the consumers: MMRec's matrix by itemID (mean-filled, listed), Elliot's `<int>.npy`
folders (and PCA copies), Cornac's modality trained on by VBPR, Parquet read by `datasets`; `dtype: float16` for
every run format; unmatched ids reported on either side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ducho
from conftest import TEXTS, write_tsv
from ducho.cli import main
from ducho.errors import ConfigError, DuchoError
from ducho.exports import cornac_modality, export
from ducho.ids import RecordKey

IDS = ["z9", "a/b", "café ☕", "m1", "b 2", "y0", "c3", "x", ".hidden", "k7", "e5", "d4"]  # not file names, unsorted


def run_items(root: Path, model: dict, fmt: str = "npy", dtype: str | None = None, source: str = "items") -> Path:
    """A run over the twelve texts; the folder of its (first) layer."""
    if source == "items":
        write_tsv(root / "items.tsv", ["item_id", "text"], [list(row) for row in zip(IDS, TEXTS)])
    else:
        write_tsv(root / "items.tsv", ["user", "item", "text"], [[f"u{n % 3}", i, t] for n, (i, t) in
                                                                 enumerate(zip(IDS, TEXTS))])
    config = {"dataset_path": str(root), "device": "cpu", "format": fmt, "workers": 0,
              "textual": {source: {"input_path": "items.tsv", "output_path": "out", "model": [model]}}}
    if dtype is not None:
        config["dtype"] = dtype
    job = ducho.run(config, progress=False).jobs[0]
    return job.output_dir / next(iter(job.counts))


def bert(tiny_bert: Path, **spec: object) -> dict:
    return {"model_name": str(tiny_bert), "backend": "transformers", "output_layers": ["pooler_output"],
            "batch_size": 4, **spec}


def vectors(layer: Path, ids: list[str]) -> np.ndarray:
    """The run's own vectors (format npy) of `ids`."""
    return np.stack([np.load(layer / f"{RecordKey(i).stem}.npy") for i in ids])


def mmrec_mapping(path: Path, items: list[str]) -> None:
    """i_id_mapping.csv as MMRec's 0rating2inter.ipynb writes it."""
    frame = pd.DataFrame([(raw, n) for n, raw in enumerate(items)], columns=["asin", "itemID"])
    frame.to_csv(path, sep="\t", index=False)


@pytest.fixture(scope="module")
def minilm_npy(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> Path:
    return run_items(tmp_path_factory.mktemp("minilm"), {"model_name": minilm, "batch_size": 4})


def test_mmrec_rows_follow_the_item_ids_and_a_missing_item_gets_the_mean(minilm_npy: Path, tmp_path: Path) -> None:
    catalogue = ["c3", "a/b", "ghost", "café ☕", "x", "z9"]  # "ghost" was never extracted; 7 run ids are not here
    mmrec_mapping(tmp_path / "i_id_mapping.csv", catalogue)
    inter = pd.DataFrame({"userID": [0, 0, 1, 1, 2, 2], "itemID": [0, 1, 2, 3, 4, 5], "rating": [5] * 6,
                          "timestamp": range(6), "x_label": [0, 0, 0, 1, 2, 0]})
    inter.to_csv(tmp_path / "tiny.inter", sep="\t", index=False)
    out = tmp_path / "data" / "tiny"
    assert main(["export", str(minilm_npy), "--to", "mmrec", "--mapping", str(tmp_path / "i_id_mapping.csv"),
                 "--name", "text_feat.npy", "--output", str(out)]) == 0

    # what MMRec does: items from the .inter, features by torch.from_numpy(np.load(...)).type(FloatTensor)
    import torch

    n_items = int(pd.read_csv(tmp_path / "tiny.inter", sep="\t")["itemID"].max()) + 1
    t_feat = torch.from_numpy(np.load(out / "text_feat.npy", allow_pickle=True)).type(torch.FloatTensor)
    assert tuple(t_feat.shape) == (n_items, 384)
    mapping = pd.read_csv(tmp_path / "i_id_mapping.csv", sep="\t")
    extracted = [raw for raw in mapping["asin"] if raw != "ghost"]
    rows = [int(mapping.set_index("asin").loc[raw, "itemID"]) for raw in extracted]
    assert np.array_equal(t_feat.numpy()[rows], vectors(minilm_npy, extracted))
    ghost = int(mapping.set_index("asin").loc["ghost", "itemID"])
    assert np.allclose(t_feat.numpy()[ghost], vectors(minilm_npy, extracted).mean(axis=0), atol=1e-7)

    missing = pd.read_csv(out / "text_feat_missing.csv", sep="\t")
    assert missing.to_dict("list") == {"itemID": [ghost], "asin": ["ghost"]}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["unmatched"]["mapping_without_features"] == ["ghost"]
    assert sorted(manifest["unmatched"]["features_without_mapping"]) == sorted(set(IDS) - set(catalogue))
    assert manifest["filled_with_mean"] == 1 and manifest["count"] == n_items and manifest["dtype"] == "float32"
    run = json.loads((minilm_npy / "manifest.json").read_text())
    assert manifest["source"]["fingerprint"] == run["fingerprint"] and manifest["source"]["model"] == run["model"]
    import hashlib

    assert manifest["mapping"]["sha256"] == hashlib.sha256((tmp_path / "i_id_mapping.csv").read_bytes()).hexdigest()


def test_mmrec_refuses_item_ids_that_are_not_0_to_n(minilm_npy: Path, tmp_path: Path) -> None:
    (tmp_path / "map.csv").write_text("asin\titemID\nz9\t0\nx\t2\n")
    with pytest.raises(DuchoError, match="0..n-1"):
        export(minilm_npy, "mmrec", mapping=tmp_path / "map.csv", output=tmp_path / "out")
    (tmp_path / "twice.csv").write_text("asin\titemID\nz9\t0\nx\t0\n")
    with pytest.raises(DuchoError, match="int id 0 is given to 'z9' and 'x'"):
        export(minilm_npy, "mmrec", mapping=tmp_path / "twice.csv", output=tmp_path / "out")
    (tmp_path / "bare.csv").write_text("z9\t0\nx\t1\n")
    with pytest.raises(DuchoError, match="header"):
        export(minilm_npy, "elliot", mapping=tmp_path / "bare.csv", output=tmp_path / "out")


def elliot_features(folder: Path) -> dict[int, np.ndarray]:
    """Elliot's loader: every file name parsed as an int, each file loaded into a float64 row."""
    items = {int(name.split(".")[0]) for name in os.listdir(folder)}
    dimension = np.load(folder / os.listdir(folder)[0]).shape[0]
    features = np.empty((len(items), dimension))
    order = sorted(items)
    for row, item in enumerate(order):
        features[row] = np.load(str(folder) + "/" + str(item) + ".npy")
    return dict(zip(order, features))


def test_elliot_int_files_equal_the_run_by_mapping_with_pca(minilm_npy: Path, tmp_path: Path) -> None:
    (tmp_path / "map.tsv").write_text("item\tid\nz9\t40\na/b\t7\nghost\t3\n.hidden\t12\ncafé ☕\t0\nm1\t5\n",
                                      encoding="utf-8")
    (result,) = export(minilm_npy, "elliot", mapping=tmp_path / "map.tsv", pca=3)
    assert result.folder == minilm_npy / "export-elliot"
    loaded = elliot_features(result.folder / "features")
    expected = {40: "z9", 7: "a/b", 12: ".hidden", 0: "café ☕", 5: "m1"}
    assert sorted(loaded) == sorted(expected)
    for number, raw in expected.items():
        assert np.array_equal(np.load(result.folder / "features" / f"{number}.npy"), vectors(minilm_npy, [raw])[0])
        assert np.array_equal(loaded[number], vectors(minilm_npy, [raw])[0])
    manifest = result.manifest
    assert manifest["unmatched"]["mapping_without_features"] == ["ghost"]
    assert len(manifest["unmatched"]["features_without_mapping"]) == len(IDS) - 5

    from sklearn.decomposition import PCA

    numbers = sorted(expected)
    fitted = PCA(n_components=3).fit_transform(vectors(minilm_npy, [expected[n] for n in numbers]).astype(np.float64))
    ours = np.stack([np.load(result.folder / "pca3" / f"{n}.npy") for n in numbers])
    assert ours.shape == (5, 3) and ours.dtype == np.float32
    assert np.allclose(ours, fitted, atol=1e-5)  # the same components, signed as scikit-learn signs them
    assert manifest["pca"]["fitted_on"] == 5 and 0 < manifest["pca"]["explained_variance_ratio"] <= 1


def test_elliot_consecutive_ids_with_the_mapping_beside_and_a_clean_re_export(minilm_npy: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "elliot"
    export(minilm_npy, "elliot", mapping=None, output=out, pca=2)
    assert (out / "pca2").is_dir()
    (result,) = export(minilm_npy, "elliot", output=out, dtype="float16")
    assert not (out / "pca2").exists()  # what the previous export wrote is gone, nothing else
    mapping = pd.read_csv(out / "item_mapping.tsv", sep="\t", dtype={"id": str})
    assert sorted(mapping["id"]) == sorted(IDS) and sorted(mapping["itemID"]) == list(range(len(IDS)))
    loaded = elliot_features(out / "features")
    for raw, number in zip(mapping["id"], mapping["itemID"]):
        stored = np.load(out / "features" / f"{number}.npy")
        assert stored.dtype == np.float16 and np.array_equal(stored, vectors(minilm_npy, [raw])[0].astype(np.float16))
        assert np.array_equal(loaded[number], stored.astype(np.float64))
    assert result.manifest["unmatched"] == {"features_without_mapping": [], "mapping_without_features": []}
    (out / "mine.txt").write_text("a user's file")
    (out / "manifest.json").unlink()
    with pytest.raises(DuchoError, match="not an export folder"):
        export(minilm_npy, "elliot", output=out)


def test_an_export_that_died_half_way_is_redone_cleanly(minilm_npy: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import ducho.exports

    calls = []

    def dying(*args: object) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        save_npy(*args)

    from ducho.writers import save_npy

    monkeypatch.setattr(ducho.exports, "save_npy", dying)
    with pytest.raises(KeyboardInterrupt):
        export(minilm_npy, "elliot", output=tmp_path / "out")
    assert len(list((tmp_path / "out" / "features").iterdir())) == 2
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "running"
    monkeypatch.undo()
    (result,) = export(minilm_npy, "elliot", output=tmp_path / "out")
    assert result.manifest["status"] == "complete" and len(list((result.folder / "features").iterdir())) == len(IDS)


def test_cornac_image_modality_trains_vbpr(tmp_path: Path, tiny_bert: Path) -> None:
    layer = run_items(tmp_path / "run", bert(tiny_bert), fmt="matrix")
    (result,) = export(layer, "cornac", dtype="float16")
    ids = (result.folder / "ids.txt").read_text(encoding="utf-8").splitlines()
    assert ids == IDS  # the run's input order, the ids as written
    assert np.load(result.folder / "features.npy").dtype == np.float16

    import cornac
    from cornac.data import FeatureModality, ImageModality, TextModality

    modality = cornac_modality(result.folder, "image")
    assert type(modality) is ImageModality
    assert type(cornac_modality(result.folder, "text")) is TextModality
    assert type(cornac_modality(result.folder, "feature")) is FeatureModality
    rng = np.random.default_rng(0)
    triples = [(f"u{u}", IDS[i], 1.0) for u in range(6) for i in rng.choice(len(IDS), 4, replace=False)]
    train = cornac.data.Dataset.from_uir(triples, seed=1)
    modality.build(id_map=train.iid_map)
    train.add_modalities(item_image=modality)
    run = np.load(layer / "features.npy")
    for raw, index in train.iid_map.items():  # Cornac's own item order, each row the run's vector of that id
        assert np.array_equal(modality.features[index], run[IDS.index(raw)].astype(np.float16))
    model = cornac.models.VBPR(k=2, k2=2, n_epochs=1, batch_size=8, learning_rate=0.01, seed=1, verbose=False)
    model.fit(train)
    scores = model.score(0)
    assert scores.shape == (train.num_items,) and np.isfinite(scores).all()


def test_parquet_export_equals_the_parquet_format_and_datasets_reads_it(
        tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    npy = run_items(tmp_path / "npy", bert(tiny_bert))
    shards = run_items(tmp_path / "pq", bert(tiny_bert), fmt="parquet") / "shards"
    matrix = run_items(tmp_path / "mat", bert(tiny_bert), fmt="matrix")
    (result,) = export(matrix, "parquet")
    exported = pq.read_table(result.folder / "shards")
    produced = pq.read_table(shards)
    assert exported.schema.equals(produced.schema, check_metadata=False)
    assert exported.schema.field("vector").type == pa.list_(pa.float32(), 32)
    assert exported.schema.metadata[b"ducho.shape"] == produced.schema.metadata[b"ducho.shape"] == b"[32]"
    assert exported.column("id").to_pylist() == produced.column("id").to_pylist() == IDS
    assert exported.column("vector").equals(produced.column("vector"))
    assert result.manifest["shards"] == ["shards/part-00000.parquet"]

    (half,) = export(npy, "parquet", dtype="float16", output=tmp_path / "half")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    dataset = datasets.load_dataset("parquet", data_files=str(half.folder / "shards" / "part-*.parquet"),
                                    split="train", cache_dir=str(tmp_path / "hf"))
    assert dataset.features["vector"].feature.dtype == "float16"
    expected = {raw: vectors(npy, [raw])[0].astype(np.float16) for raw in IDS}
    assert sorted(dataset["id"]) == sorted(IDS)  # npy files keep no input order: rows follow the file names
    values = np.asarray(dataset.with_format("numpy")["vector"])  # datasets hands float16 back as float32
    for raw, row in zip(dataset["id"], values):
        assert np.array_equal(row, expected[raw].astype(np.float32))
    frame = pd.read_parquet(half.folder / "shards")
    assert frame["vector"][0].dtype == np.float16 and np.array_equal(frame["vector"][0], expected[frame["id"][0]])


def test_interactions_go_to_parquet_with_user_and_item_and_not_to_mmrec(tmp_path: Path, tiny_bert: Path) -> None:
    import pyarrow.parquet as pq

    layer = run_items(tmp_path, bert(tiny_bert), source="interactions")
    (result,) = export(layer, "parquet")
    table = pq.read_table(result.folder / "shards")
    pairs = list(zip(table.column("user").to_pylist(), table.column("item").to_pylist()))
    assert sorted(pairs) == sorted((f"u{n % 3}", i) for n, i in enumerate(IDS))
    for (user, item), vector in zip(pairs, table.column("vector").to_pylist()):
        assert np.array_equal(np.asarray(vector, np.float32), np.load(layer / f"{RecordKey(item, user).stem}.npy"))
    (tmp_path / "map.csv").write_text("asin\titemID\nz9\t0\n")
    with pytest.raises(DuchoError, match="interactions --to parquet"):
        export(layer, "mmrec", mapping=tmp_path / "map.csv")


def test_a_folder_above_exports_every_layer(tmp_path: Path, tiny_bert: Path) -> None:
    layer = run_items(tmp_path, bert(tiny_bert, output_layers=["pooler_output", "last_hidden_state"],
                                     pooling="mean"))
    root = layer.parent
    export(root, "cornac")
    results = export(root, "cornac", output=tmp_path / "all")  # the export folders found under root are passed over
    assert sorted(r.folder for r in results) == [tmp_path / "all" / "last_hidden_state",
                                                 tmp_path / "all" / "pooler_output"]
    for result in results:
        features = np.load(result.folder / "features.npy")
        assert features.shape == (len(IDS), 32)
        order = (result.folder / "ids.txt").read_text(encoding="utf-8").splitlines()
        assert np.array_equal(features, vectors(result.layer, order))


@pytest.mark.parametrize("fmt", ["npy", "matrix", "parquet"])
def test_float16_runs_write_half_the_bytes_equal_to_the_float32_vectors(tmp_path: Path, tiny_bert: Path,
                                                                        fmt: str) -> None:
    single = run_items(tmp_path / "single", bert(tiny_bert), fmt=fmt)
    half = run_items(tmp_path / "half", bert(tiny_bert), fmt=fmt, dtype="float16")
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (single, half)]
    assert [m["dtype"] for m in manifests] == ["float32", "float16"]
    assert manifests[0]["fingerprint"] != manifests[1]["fingerprint"]
    if fmt == "npy":
        one, other = vectors(single, IDS), vectors(half, IDS)
        assert (half / "x.npy").stat().st_size == 128 + 32 * 2 and (single / "x.npy").stat().st_size == 128 + 32 * 4
    elif fmt == "matrix":
        one, other = np.load(single / "features.npy"), np.load(half / "features.npy")
        assert (half / "features.npy").stat().st_size == 128 + len(IDS) * 32 * 2
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(folder / "shards") for folder in (single, half)]
        assert tables[1].schema.field("vector").type == pa.list_(pa.float16(), 32)
        one, other = (np.stack(t.column("vector").to_numpy(zero_copy_only=False)) for t in tables)
    assert other.dtype == np.float16 and np.array_equal(other, one.astype(np.float16))
    (back,) = export(half, "cornac", output=tmp_path / "back")  # read back by the exporter in its own dtype
    assert np.load(back.folder / "features.npy").dtype == np.float16 and back.manifest["dtype"] == "float16"


def test_a_dtype_change_refuses_to_mix_with_existing_outputs(tmp_path: Path, tiny_bert: Path) -> None:
    run_items(tmp_path, bert(tiny_bert))
    with pytest.raises(DuchoError, match="other settings"):
        run_items(tmp_path, bert(tiny_bert), dtype="float16")
    config = {"dataset_path": str(tmp_path), "device": "cpu", "format": "sparse", "textual": {"items": {
        "input_path": "items.tsv", "output_path": "sparse", "dtype": "float16", "model": [bert(tiny_bert)]}}}
    with pytest.raises(ConfigError, match="format sparse stores float32"):
        ducho.run(config, progress=False)
    config["textual"]["items"]["format"] = "matrix"  # the source's own dtype overrides the top level's float32
    job = ducho.run(config, progress=False).jobs[0]
    assert np.load(job.output_dir / "pooler_output" / "features.npy").dtype == np.float16


def test_values_beyond_float16_are_refused_not_written_as_inf(tmp_path: Path) -> None:
    from ducho.writers import open_writer

    writer = open_writer("npy", tmp_path, "0" * 16, "1" * 64, False, False, "float16")
    writer.write(0, [0], [RecordKey("ok")], [np.full(3, 60000.0, np.float32)])
    assert np.load(tmp_path / "ok.npy").dtype == np.float16
    with pytest.raises(DuchoError, match="float16's range"):
        writer.write(0, [1], [RecordKey("big")], [np.full(3, 70000.0, np.float32)])
    assert not (tmp_path / "big.npy").exists()


def test_export_help_loads_no_numpy() -> None:
    code = ("import sys\nfrom ducho.cli import main\ntry:\n    main(['export', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('numpy', 'torch', 'pyarrow', 'tensorflow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--to {elliot,mmrec,cornac,parquet}" in result.stdout and result.stdout.strip().endswith("[]")


def test_a_sparse_run_is_exported_dense_in_its_row_order(tmp_path: Path, tiny_bert: Path) -> None:
    from scipy import sparse

    layer = run_items(tmp_path, bert(tiny_bert), fmt="sparse")
    (result,) = export(layer, "elliot", mapping=None)
    mapping = pd.read_csv(result.folder / "item_mapping.tsv", sep="\t", dtype={"id": str})
    assert mapping["id"].tolist() == IDS and mapping["itemID"].tolist() == list(range(len(IDS)))
    dense = sparse.load_npz(layer / "features.npz").toarray()
    assert np.array_equal(np.stack([np.load(result.folder / "features" / f"{n}.npy") for n in range(len(IDS))]), dense)
