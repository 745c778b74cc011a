"""`ducho demo`: copy the bundled data, extract it, and print nearest neighbours so the features can be judged."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from ..runner import run

HERE = Path(__file__).parent


def main(output: str | Path = "demo-output") -> int:
    root = Path(output).resolve()
    shutil.copytree(HERE / "data", root / "data", dirs_exist_ok=True)
    result = run(HERE / "config.yml", [f"dataset_path={root}"], progress=True)
    print("\nwritten:")
    for job in result.jobs:
        for folder, count in job.counts.items():
            print(f"  {job.output_dir / folder}: {count} files, {len(job.skipped)} skipped")
    items_dir = result.jobs[0].output_dir / "sentence_embedding"
    reviews_dir = result.jobs[1].output_dir / "sentence_embedding"
    print_neighbours(root / "data" / "textual" / "items.tsv", items_dir, reviews_dir)
    print(f"\nlog: {result.log_file}")
    return 0


def print_neighbours(items_tsv: Path, items_dir: Path, reviews_dir: Path) -> None:
    """Per item: the most similar other item, and the review (any item's) closest to its description."""
    with items_tsv.open(encoding="utf-8", newline="") as handle:
        texts = {row["item_id"]: row["description"] for row in csv.DictReader(handle, delimiter="\t")}
    ids = sorted(p.stem for p in items_dir.glob("*.npy"))
    vectors = _unit(np.stack([np.load(items_dir / f"{i}.npy") for i in ids]))
    review_ids = sorted(p.stem for p in reviews_dir.glob("*.npy"))
    reviews = _unit(np.stack([np.load(reviews_dir / f"{r}.npy") for r in review_ids]))
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1.0)
    to_reviews = vectors @ reviews.T
    print("\nnearest neighbours (cosine of MiniLM description embeddings):")
    for row, item in enumerate(ids):
        best = int(similarity[row].argmax())
        review = review_ids[int(to_reviews[row].argmax())]
        print(f"  {item} {_short(texts.get(item, ''))!r}\n"
              f"      -> {ids[best]} ({similarity[row, best]:.2f}) {_short(texts.get(ids[best], ''))!r}; "
              f"closest review: {review}")


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
