"""`format: parquet`: one part per shard, read back by pyarrow, pandas and Hugging Face datasets equal to the npy
files; interactions, spatial shapes, resume by shard, a changed input, and chunk writers fed interleaved shards."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ducho
from conftest import TEXTS, write_tsv
from ducho.errors import DuchoError
from ducho.ids import RecordKey
from ducho.writers import open_writer

IDS = ["z9", "a/b", "café ☕", "m1", "b 2", "y0", "c3", "x", ".hidden", "k7", "e5", "d4"]  # not sorted, not file names
DEAD = 4194305  # above the largest pid_max: a killed run's temporary


def items_config(root: Path, fmt: str, model: dict, rows: list[list[str]] | None = None) -> dict:
    write_tsv(root / "items.tsv", ["item_id", "text"], rows or [list(row) for row in zip(IDS, TEXTS)])
    return {"dataset_path": str(root), "device": "cpu", "format": fmt,
            "textual": {"items": {"input_path": "items.tsv", "output_path": "out", "model": [model]}}}


def bert(tiny_bert: Path, **spec: object) -> dict:
    return {"model_name": str(tiny_bert), "backend": "transformers", "output_layers": ["pooler_output"],
            "batch_size": 4, **spec}


def parts(folder: Path) -> list[Path]:
    return sorted((folder / "shards").glob("part-*.parquet"))


def npy_rows(folder: Path, keys: list[RecordKey]) -> np.ndarray:
    return np.stack([np.load(folder / f"{key.stem}.npy") for key in keys])


def small_shards(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Shards of `size` records (the runner's constant; its module moved with the shard runner)."""
    patched = []
    for module, name in (("ducho.shards", "SHARD"), ("ducho.runner", "CHUNK")):
        try:
            target = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(target, name):
            monkeypatch.setattr(target, name, size)
            patched.append(name)
    assert patched, "no shard size constant found"


def test_items_read_back_by_pyarrow_pandas_and_datasets_equal_the_npy_files(
        tmp_path: Path, minilm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = {"model_name": minilm, "backend": "sentence_transformers", "batch_size": 4}
    npy = ducho.run(items_config(tmp_path / "npy", "npy", model), progress=False).jobs[0].output_dir
    job = ducho.run(items_config(tmp_path / "pq", "parquet", model), progress=False).jobs[0]
    layer = job.output_dir / "sentence_embedding"
    assert [p.name for p in parts(layer)] == ["part-00000.parquet"] and job.counts["sentence_embedding"] == len(IDS)
    expected = npy_rows(npy / "sentence_embedding", [RecordKey(i) for i in IDS])

    table = pq.read_table(layer / "shards")  # the folder holds the parts only: read whole
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 384)
    assert table.schema.metadata[b"ducho.shape"] == b"[384]"
    assert table.schema.metadata[b"ducho.layer"] == b"sentence_embedding"
    assert table.column("id").to_pylist() == IDS  # the input order, the ids as written
    assert np.array_equal(np.stack(table.column("vector").to_numpy(zero_copy_only=False)), expected)
    assert pq.read_metadata(parts(layer)[0]).row_group(0).column(1).compression == "ZSTD"

    import pandas as pd

    frame = pd.read_parquet(layer / "shards")
    assert frame["id"].tolist() == IDS and np.array_equal(np.stack(frame["vector"].to_numpy()), expected)

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    dataset = datasets.load_dataset("parquet", data_files=str(layer / "shards" / "part-*.parquet"), split="train",
                                    cache_dir=str(tmp_path / "hf"))
    assert dataset["id"] == IDS
    assert np.array_equal(np.asarray(dataset.with_format("numpy")["vector"]), expected)

    manifest = json.loads((layer / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["count"] == len(IDS) and manifest["shape"] == [384]
    assert manifest["shards"] == ["shards/part-00000.parquet"] and manifest["rows"] == len(IDS)
    assert "part-NNNNN.parquet" in manifest["layout"]


def test_interactions_have_user_and_item_columns(tmp_path: Path, tiny_bert: Path) -> None:
    rows = [[f"u{n % 3}", IDS[n], text] for n, text in enumerate(TEXTS)]
    outputs = {}
    for fmt in ("npy", "parquet"):
        write_tsv(tmp_path / fmt / "reviews.tsv", ["user", "item", "review"], rows)
        config = {"dataset_path": str(tmp_path / fmt), "device": "cpu", "format": fmt, "textual": {"interactions": {
            "input_path": "reviews.tsv", "output_path": "out", "model": [bert(tiny_bert)]}}}
        outputs[fmt] = ducho.run(config, progress=False).jobs[0].output_dir / "pooler_output"
    table = pq.read_table(parts(outputs["parquet"]))
    assert table.column_names == ["user", "item", "vector"]
    assert list(zip(table.column("user").to_pylist(), table.column("item").to_pylist())) == \
        [(user, item) for user, item, _ in rows]
    keys = [RecordKey(item, user) for user, item, _ in rows]
    assert np.array_equal(np.stack(table.column("vector").to_numpy(zero_copy_only=False)),
                          npy_rows(outputs["npy"], keys))


def test_a_spatial_layer_keeps_its_shape_in_the_metadata(tmp_path: Path) -> None:
    from test_torch_vision import photos, visual_config

    photos(tmp_path / "images", 3)
    folders = {}
    for fmt in ("npy", "parquet"):
        config = visual_config(tmp_path, "images", output_layers=["layer4"], pooling="none")
        config["format"] = fmt
        config["visual"]["items"]["output_path"] = fmt
        folders[fmt] = ducho.run(config, progress=False).jobs[0].output_dir / "layer4"
    table = pq.read_table(parts(folders["parquet"]))
    shape = tuple(json.loads(table.schema.metadata[b"ducho.shape"]))
    assert shape == (512, 7, 7) and table.schema.field("vector").type.list_size == 512 * 7 * 7
    assert table.column("id").to_pylist() == ["p0", "p1", "p2"]
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).reshape(-1, *shape)
    assert np.array_equal(vectors, npy_rows(folders["npy"], [RecordKey(f"p{n}") for n in range(3)]))
    assert json.loads((folders["parquet"] / "manifest.json").read_text())["shape"] == [512, 7, 7]


def test_shards_resume_one_by_one_and_a_changed_input_is_redone(
        tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_shards(monkeypatch, 4)
    config = items_config(tmp_path, "parquet", bert(tiny_bert), [[IDS[n], TEXTS[n]] for n in range(10)])
    first = ducho.run(config, progress=False).jobs[0]
    layer = first.output_dir / "pooler_output"
    names = [p.name for p in parts(layer)]
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.read_metadata(p).num_rows for p in parts(layer)] == [4, 4, 2]
    assert pq.read_table(parts(layer)).column("id").to_pylist() == IDS[:10]
    before = {p.name: p.read_bytes() for p in parts(layer)}

    (layer / "shards" / "part-00001.parquet").unlink()
    stale = layer / "shards" / f".part-00001.parquet.{DEAD}.1.tmp"  # what a killed run leaves
    stale.write_bytes(b"half")
    again = ducho.run(config, progress=False).jobs[0]
    assert (again.extracted, again.resumed, again.counts["pooler_output"]) == (4, 6, 10)
    assert {p.name: p.read_bytes() for p in parts(layer)} == before and not stale.exists()

    manifest = json.loads((layer / "manifest.json").read_text())
    writer = open_writer("parquet", layer, manifest["fingerprint"], manifest["input_sha256"], False, False)
    assert writer.complete and writer.is_done(7, []) and writer.finish() == 10
    assert writer.describe() == {"shards": [f"shards/{name}" for name in names], "rows": 10,
                                 "columns": ["id", "vector"], "vector_shape": [32],
                                 "compression": "zstd"}

    shorter = items_config(tmp_path, "parquet", bert(tiny_bert), [[IDS[n], TEXTS[n + 1]] for n in range(6)])
    changed = ducho.run(shorter, progress=False).jobs[0]
    assert (changed.extracted, changed.resumed, changed.counts["pooler_output"]) == (6, 0, 6)
    assert [p.name for p in parts(layer)] == names[:2]  # the third shard is gone with the records it held
    table = pq.read_table(parts(layer))
    assert table.column("id").to_pylist() == IDS[:6]
    old = pq.read_table(pa.BufferReader(before["part-00000.parquet"])).column("vector")
    assert not np.array_equal(table.column("vector")[0].as_py(), old[0].as_py())  # its new text


def test_token_matrices_of_varying_length_are_refused(tmp_path: Path, tiny_bert: Path) -> None:
    config = items_config(tmp_path, "parquet", bert(tiny_bert, output_layers=["last_hidden_state"], pooling="none"))
    with pytest.raises(DuchoError, match="format parquet needs one shape per record"):
        ducho.run(config, progress=False)


def keys_and_rows(prefix: str, count: int) -> tuple[list[RecordKey], list[np.ndarray]]:
    rows = [np.full(3, float(n), np.float32) + (100 if prefix == "b" else 0) for n in range(count)]
    return [RecordKey(f"{prefix}{n}") for n in range(count)], rows


@pytest.mark.parametrize("fmt", ["matrix", "sparse", "parquet"])
def test_interleaved_shards_never_mix(tmp_path: Path, fmt: str) -> None:
    """Batches of shards 0 and 1 arrive interleaved (as several executors send them); shard 1 ends first."""
    a, a_rows = keys_and_rows("a", 3)
    b, b_rows = keys_and_rows("b", 3)
    writer = open_writer(fmt, tmp_path, "0" * 16, "1" * 64, False, False)
    writer.write(1, [2], [b[2]], [b_rows[2]])
    writer.write(0, [1, 0], [a[1], a[0]], [a_rows[1], a_rows[0]])
    writer.write(1, [0, 1], b[:2], b_rows[:2])
    writer.end_chunk(1, 3)
    writer.write(0, [2], [a[2]], [a_rows[2]])
    writer.end_chunk(0, 3)
    assert writer.finish() == 6 and writer.pending == {}
    if fmt == "parquet":
        tables = [pq.read_table(p) for p in parts(tmp_path)]
        assert [t.column("id").to_pylist() for t in tables] == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]
        features = np.stack(pa.concat_tables(tables).column("vector").to_numpy(zero_copy_only=False))
    else:
        assert (tmp_path / "ids.tsv").read_text().split() == ["item", "a0", "a1", "a2", "b0", "b1", "b2"]
        if fmt == "matrix":
            features = np.load(tmp_path / "features.npy")
        else:
            from scipy import sparse

            features = sparse.load_npz(tmp_path / "features.npz").toarray()
    assert np.array_equal(features, np.stack(a_rows + b_rows))


def test_overwrite_removes_the_parts_and_only_ducho_files(tmp_path: Path) -> None:
    keys, rows = keys_and_rows("a", 2)
    writer = open_writer("parquet", tmp_path, "0" * 16, "1" * 64, False, False)
    writer.write(3, [0, 1], keys, rows)
    writer.end_chunk(3, 2)
    (tmp_path / "shards" / "mine.parquet").write_bytes(b"a user's file")
    assert [p.name for p in parts(tmp_path)] == ["part-00003.parquet"]
    again = open_writer("parquet", tmp_path, "2" * 16, "1" * 64, True, False)
    assert parts(tmp_path) == [] and (tmp_path / "shards" / "mine.parquet").exists() and not again.is_done(3, keys)


def test_a_uri_output_gets_every_part_as_its_shard_is_written_and_the_manifest_at_the_end(
        tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`output_path: <URI>` (fsspec's in-memory file system here; s3://, gs://... go the same way): the parts read
    back from the URI equal the staging folder's; a changed input's extra parts are removed there too."""
    import fsspec
    import pyarrow.dataset as ds

    small_shards(monkeypatch, 4)
    memory = fsspec.filesystem("memory")
    uri = "memory://bucket/features"
    cfg = items_config(tmp_path, "parquet", bert(tiny_bert))
    cfg["textual"]["items"]["output_path"] = uri
    ducho.run(cfg, progress=False)
    layer = "bucket/features/transformers/tiny-bert/pooler_output"
    assert sorted(p.rsplit("/", 1)[-1] for p in memory.ls(f"/{layer}/shards", detail=False)) == \
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    staging = next((tmp_path / ".ducho-staging").rglob("pooler_output"))
    remote = ds.dataset(f"/{layer}/shards", filesystem=memory, format="parquet").to_table()
    assert remote.equals(pq.read_table(staging / "shards"))
    assert json.loads(memory.cat(f"/{layer}/manifest.json"))["count"] == len(IDS)

    cfg = items_config(tmp_path, "parquet", bert(tiny_bert), [list(row) for row in zip(IDS[:5], TEXTS)])
    cfg["textual"]["items"]["output_path"] = uri
    ducho.run(cfg, progress=False)
    assert len(memory.ls(f"/{layer}/shards")) == 2  # the third part is gone there as here
    assert json.loads(memory.cat(f"/{layer}/manifest.json"))["count"] == 5


def test_an_s3_output_on_a_local_s3_server(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`output_path: s3://...` through pyarrow's S3 client against a real S3 server on loopback (moto's), found
    through the AWS SDK's own `AWS_ENDPOINT_URL`: the parts and the manifest read back from S3 equal the staging
    folder's."""
    import boto3
    import pyarrow.dataset as ds
    from moto.server import ThreadedMotoServer
    from pyarrow import fs

    small_shards(monkeypatch, 4)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3").create_bucket(Bucket="features")
        cfg = items_config(tmp_path, "parquet", bert(tiny_bert))
        cfg["textual"]["items"]["output_path"] = "s3://features/run"
        ducho.run(cfg, progress=False)
        s3 = fs.S3FileSystem(endpoint_override=f"http://{host}:{port}")  # a reader of its own
        layer = "features/run/transformers/tiny-bert/pooler_output"
        parts = s3.get_file_info(fs.FileSelector(f"{layer}/shards"))
        assert sorted(p.base_name for p in parts) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
        staging = next((tmp_path / ".ducho-staging").rglob("pooler_output"))
        remote = ds.dataset(f"{layer}/shards", filesystem=s3, format="parquet").to_table()
        assert remote.equals(pq.read_table(staging / "shards"))
        with s3.open_input_stream(f"{layer}/manifest.json") as stream:
            assert json.loads(stream.read())["count"] == len(IDS)
    finally:
        server.stop()


def test_a_uri_output_takes_format_parquet(tmp_path: Path) -> None:
    from ducho.errors import ConfigError

    cfg = items_config(tmp_path, "npy", {"model_name": "x"})
    cfg["textual"]["items"]["output_path"] = "s3://bucket/features"
    with pytest.raises(ConfigError, match="textual.items.output_path.*format: parquet"):
        ducho.run(cfg, progress=False)
