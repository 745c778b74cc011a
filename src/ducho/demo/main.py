"""`ducho demo`: the paper's three demos on bundled data with offline models; for every extracted vector layer,
each record's nearest neighbour is printed so the features can be judged by eye, and `report.html` (`ducho report`,
coloured by the bundled item categories) shows them all."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from ..report import write_report
from ..runner import JobResult, run

HERE = Path(__file__).parent
LABELS = "data/labels.tsv"  # the category of every demo item (report colours and k-NN accuracy)
# demo number -> (config, the TSV describing its items, what it shows)
DEMOS = {
    1: ("demo1.yml", "data/visual/items.tsv", "fashion: visual + textual item features (photos)"),
    2: ("demo2.yml", "data/audio/items.tsv", "music: audio + textual item features (clips)"),
    3: ("demo3.yml", "data/textual/items.tsv", "reviews: textual item and interaction features"),
}


def main(output: str | Path = "demo-output", only: list[int] | None = None) -> int:
    root = Path(output).resolve()
    shutil.copytree(HERE / "data", root / "data", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.py", "README.md"))
    for number in only or sorted(DEMOS):
        config, described, title = DEMOS[number]
        print(f"\n=== demo {number}: {title} ===")
        result = run(HERE / config, [f"dataset_path={root}"], progress=True)
        texts = descriptions(root / described)
        for job in result.jobs:
            print_job(job, texts)
        print(f"log: {result.log_file}")
    print(f"\nreport: {write_report(root, root / 'report.html', labels=root / LABELS)}")
    return 0


def descriptions(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return {row[0]: row[-1] for row in rows[1:] if row}


def print_job(job: JobResult, texts: dict[str, str]) -> None:
    for folder, count in job.counts.items():
        layer = job.output_dir / folder
        print(f"\n{job.key}: {job.model} / {folder}: {count} files, {len(job.skipped)} skipped -> {layer}")
        ids = sorted(p.stem for p in layer.glob("*.npy"))
        vectors = [np.load(layer / f"{i}.npy") for i in ids]
        if len(ids) < 2 or vectors[0].ndim != 1:
            continue
        matrix = unit(np.stack(vectors))
        similarity = matrix @ matrix.T
        np.fill_diagonal(similarity, -np.inf)
        print("  nearest neighbour (cosine):")
        for row, record in enumerate(ids):
            best = int(similarity[row].argmax())
            print(f"  {record:<22} -> {ids[best]:<22} {similarity[row, best]:.2f}  {short(texts.get(ids[best], ''))}")


def unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
