"""Incremental runs: after the input changes, a run computes only the records added or changed, keeps the others'
vectors, removes (or keeps) the removed ones, and ends with the files a run from scratch over the new input writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ducho
from conftest import write_tsv
from ducho.layer_files import find_layers, open_records

WORDS = "red blue green light heavy shoe book tent coffee rain long short great small".split()


@pytest.fixture(autouse=True)
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ducho.shards.SHARD", 32)  # several shards from a few hundred records


def rows(count: int) -> list[list[str]]:
    rng = np.random.default_rng(count)
    return [[f"i{n:04d}", " ".join(rng.choice(WORDS, rng.integers(2, 25)))] for n in range(count)]


def changed(before: list[list[str]]) -> list[list[str]]:
    """10 added (5 first, 5 last), 5 changed, 5 removed: positions shift across every shard."""
    after = [row[:] for n, row in enumerate(before) if not 40 <= n < 45]
    for row in after[60:65]:
        row[1] += " changed"
    return [[f"new{n}", f"new text {n} " * (n + 1)] for n in range(5)] + after + \
        [[f"new{n}", f"later text {n}"] for n in range(5, 10)]


def text_config(root: Path, model: Path, fmt: str, batch_size: int, **top: object) -> dict:
    return {"dataset_path": str(root), "device": "cpu", "format": fmt, **top,
            "textual": {"items": {"input_path": "in.tsv", "output_path": "out", "model": [
                {"model_name": str(model), "backend": "transformers", "batch_size": batch_size,
                 "output_layers": ["pooler_output", "last_hidden_state"], "pooling": "mean"}]}}}


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file a run leaves but its manifests (they hold times and the run's counts) and records.tsv (input
    digests: a copied image has another modification time)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "records.tsv")}


def manifests(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("manifest.json"))]


def vectors(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """layer folder -> id -> vector, whatever the format."""
    out = {}
    for layer in find_layers([folder]):
        records = open_records(layer)
        out[layer.folder.name] = {records.label(row): np.asarray(records.record(row)) for row in range(len(records))}
    return out


@pytest.mark.parametrize("fmt", ["npy", "matrix", "parquet"])
def test_only_added_and_changed_records_are_computed_and_files_equal_a_fresh_run(
        tmp_path: Path, tiny_bert: Path, fmt: str) -> None:
    """Batches of 8: the 15 records computed again are batched otherwise than in the fresh run, yet a text's bits
    depend only on its padded length (a multiple of 8 tokens), so the files are equal byte for byte."""
    before, after = rows(150), changed(rows(150))
    incremental, fresh = tmp_path / "incremental", tmp_path / "fresh"
    write_tsv(incremental / "in.tsv", ["item_id", "text"], before)
    first = ducho.run(text_config(incremental, tiny_bert, fmt, 8), progress=False).jobs[0]
    assert first.extracted == 150
    kept = vectors(incremental / "out")
    write_tsv(incremental / "in.tsv", ["item_id", "text"], after)
    second = ducho.run(text_config(incremental, tiny_bert, fmt, 8), progress=False).jobs[0]
    assert (second.extracted, second.resumed) == (15, 140)
    for manifest in manifests(incremental / "out"):
        assert manifest["incremental"] == {"new": 10, "changed": 5, "removed": 5, "unchanged": 140}
        assert manifest["count"] == 155
    write_tsv(fresh / "in.tsv", ["item_id", "text"], after)
    ducho.run(text_config(fresh, tiny_bert, fmt, 8), progress=False)
    assert outputs(incremental / "out") == outputs(fresh / "out")
    ours, theirs = (sorted(p.read_text() for p in (root / "out").rglob("records.tsv")) for root in (incremental, fresh))
    assert ours == theirs and len(ours[0].splitlines()) == 156  # the next run's digests: those of the new input
    assert not list((incremental / "out").rglob(".previous"))
    recomputed = {row[0] for row in after[:5] + after[-5:] + after[65:70]}
    for layer, by_id in vectors(incremental / "out").items():
        for label, vector in by_id.items():
            if label not in recomputed:  # kept as the first run wrote it, not recomputed
                assert vector.tobytes() == kept[layer][label].tobytes(), label


@pytest.mark.parametrize("fmt", ["npy", "matrix"])
def test_on_removed_keep(tmp_path: Path, tiny_bert: Path, fmt: str) -> None:
    """npy: the removed records' files stay; matrix: their rows follow the input's, in their previous order."""
    before, after = rows(70), rows(70)[3:]
    write_tsv(tmp_path / "in.tsv", ["item_id", "text"], before)
    ducho.run(text_config(tmp_path, tiny_bert, fmt, 4, on_removed="keep"), progress=False)
    first = vectors(tmp_path / "out")
    write_tsv(tmp_path / "in.tsv", ["item_id", "text"], after)
    job = ducho.run(text_config(tmp_path, tiny_bert, fmt, 4, on_removed="keep"), progress=False).jobs[0]
    assert job.extracted == 0 and manifests(tmp_path / "out")[0]["incremental"]["removed"] == 3
    second = vectors(tmp_path / "out")
    for layer in first:
        assert {k: v.tobytes() for k, v in second[layer].items()} == {k: v.tobytes() for k, v in first[layer].items()}
        if fmt == "matrix":
            assert list(second[layer]) == [row[0] for row in after] + [row[0] for row in before[:3]]


@pytest.mark.parametrize("model", ["vit", "resnet18"])
def test_an_image_folder_recomputes_added_and_modified_files_only(tmp_path: Path, tiny_vit: Path, model: str) -> None:
    """Batches of 8, so the 3 records computed again make a short batch: it is filled up to 8 rows (the classifier's
    matmul, one row per image, gives other bits below 4 rows), and the files equal the fresh run's byte for byte."""
    rng = np.random.default_rng(0)
    spec = {"model_name": str(tiny_vit), "backend": "transformers"} if model == "vit" else \
        {"model_name": "resnet18", "weights": "none", "output_layers": ["avgpool", "fc"]}

    def image(path: Path) -> None:
        Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(path)

    def config(root: Path) -> dict:
        return {"dataset_path": str(root), "device": "cpu", "workers": 0, "visual": {"items": {
            "input_path": "images", "output_path": "out", "model": [{**spec, "batch_size": 8}]}}}

    for root in (tmp_path / "incremental", tmp_path / "fresh"):
        (root / "images").mkdir(parents=True)
    for n in range(12):
        image(tmp_path / "incremental" / "images" / f"p{n:02d}.png")
    ducho.run(config(tmp_path / "incremental"), progress=False)
    folder = tmp_path / "incremental" / "images"
    image(folder / "p03.png")  # modified: new pixels, new size and time
    os.utime(folder / "p03.png", ns=(1, 1))
    (folder / "p07.png").unlink()
    image(folder / "a00.png")
    image(folder / "z99.png")
    job = ducho.run(config(tmp_path / "incremental"), progress=False).jobs[0]
    assert (job.extracted, job.resumed) == (3, 10)
    assert manifests(tmp_path / "incremental" / "out")[0]["incremental"] == \
        {"new": 2, "changed": 1, "removed": 1, "unchanged": 10}
    for path in folder.iterdir():
        (tmp_path / "fresh" / "images" / path.name).write_bytes(path.read_bytes())
    ducho.run(config(tmp_path / "fresh"), progress=False)
    assert outputs(tmp_path / "incremental" / "out") == outputs(tmp_path / "fresh" / "out")


@pytest.mark.parametrize("fmt", ["npy", "matrix"])
def test_an_interrupted_incremental_run_resumes_to_the_same_files(
        tmp_path: Path, tiny_bert: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ducho import writers

    before, after = rows(100), changed(rows(100))
    incremental, fresh = tmp_path / "incremental", tmp_path / "fresh"
    write_tsv(incremental / "in.tsv", ["item_id", "text"], before)
    ducho.run(text_config(incremental, tiny_bert, fmt, 4), progress=False)
    write_tsv(incremental / "in.tsv", ["item_id", "text"], after)
    save, saved = writers.save_npy, []

    def save_then_stop(*args: object) -> None:
        saved.append(args)
        if len(saved) == 8:
            raise KeyboardInterrupt
        save(*args)

    monkeypatch.setattr(writers, "save_npy", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ducho.run(text_config(incremental, tiny_bert, fmt, 4), progress=False)
    assert list((incremental / "out").rglob(".previous"))  # the vectors to keep are still there
    monkeypatch.setattr(writers, "save_npy", save)
    job = ducho.run(text_config(incremental, tiny_bert, fmt, 4), progress=False).jobs[0]
    assert job.extracted <= 15
    write_tsv(fresh / "in.tsv", ["item_id", "text"], after)
    ducho.run(text_config(fresh, tiny_bert, fmt, 4), progress=False)
    assert outputs(incremental / "out") == outputs(fresh / "out")


def test_interactions_from_a_mapping_recompute_only_the_pairs_added(tmp_path: Path, tiny_vit: Path) -> None:
    """A file's digest is its path in the folder, not its line in the mapping: a line added above moves the others'
    lines, not their digests."""
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    for n in range(7):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"f{n}.png")
    pairs = [[f"f{n}.png", f"u{n % 3}", f"i{n}"] for n in range(1, 7)]
    config = {"dataset_path": str(tmp_path), "device": "cpu", "workers": 0, "visual": {"interactions": {
        "input_path": "images", "output_path": "out", "mapping_path": "pairs.tsv", "model": [
            {"model_name": str(tiny_vit), "backend": "transformers", "batch_size": 1}]}}}
    write_tsv(tmp_path / "pairs.tsv", ["file", "user", "item"], pairs)
    assert ducho.run(config, progress=False).jobs[0].extracted == 6
    write_tsv(tmp_path / "pairs.tsv", ["file", "user", "item"], [["f0.png", "u9", "i0"], *pairs])
    job = ducho.run(config, progress=False).jobs[0]
    assert (job.extracted, job.resumed) == (1, 6)
    assert manifests(tmp_path / "out")[0]["incremental"] == {"new": 1, "changed": 0, "removed": 0, "unchanged": 6}
