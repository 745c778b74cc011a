"""Deterministic synthetic texts of mixed length for the benchmarks."""

from __future__ import annotations

import csv
import random
from pathlib import Path

WORDS = ("light running shoe marathon cushion espresso machine crema grinder tent rain camp stove guitar string "
         "tune warm bright book story kids night sleep caffè perfetto crema densa schuh leicht laufen zelt regen "
         "libro bambini storia great poor never again always love hate delivery quality price size colour fits "
         "comfortable heavy quick slow sound review product bought return refund gift recommend").split()


def make_texts(count: int, seed: int = 0, min_words: int = 3, max_words: int = 160) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        # mostly short, some long: like real reviews
        n = min(max_words, max(min_words, int(rng.lognormvariate(3.0, 0.9))))
        texts.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
    return texts


def write_items(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["item_id", "text"])
        writer.writerows([f"i{n:06d}", t] for n, t in enumerate(texts))
    return path
