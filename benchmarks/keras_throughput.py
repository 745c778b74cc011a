"""End-to-end `ducho.run` with a Keras model (JPEG folder in, .npy files out) against (1) the bare
`predict_on_batch` of the same multi-output model on the same images, already decoded and preprocessed into
batches in memory, and (2) the reference behaviour: one image at a time, decoded, preprocessed and passed to the
model with one call per image. Keras ResNet50 with random weights, layer avg_pool. Prints images/s and both ratios.

    .venv/bin/python benchmarks/keras_throughput.py [--images 256] [--batch-size 32] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

from visual_throughput import make_jpegs  # noqa: E402


def bare(extractor: Any, batches: list[np.ndarray]) -> float:
    """Images/s of `predict_on_batch` alone on pre-decoded, preprocessed batches."""
    start = time.perf_counter()
    for batch in batches:
        extractor.predict_on_batch(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def one_at_a_time(reference: Any, paths: list[Path]) -> float:
    """Images/s of the reference behaviour: decode, preprocess and one model call per image."""
    start = time.perf_counter()
    for path in paths:
        x = reference.prepare([reference.loader(str(path))])
        np.asarray(reference.extractor(x, training=False))
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="ducho decode processes (default: auto)")
    args = parser.parse_args()

    import ducho
    from ducho.backends.keras_vision import KerasVision
    from ducho.config.schema import VisualModelSpec

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp) / "images", args.images)
        reference = KerasVision(VisualModelSpec(model_name="ResNet50", weights="none", output_layers=["avg_pool"]),
                                "cpu")
        batches = [reference.prepare([reference.loader(str(p)) for p in paths[i:i + args.batch_size]])
                   for i in range(0, len(paths), args.batch_size)]
        reference.extractor.predict_on_batch(batches[0])  # warm-up: traces the predict function
        reference.extractor(batches[0][:1], training=False)
        print(f"{len(paths)} JPEGs, Keras ResNet50 (random weights) avg_pool, batch {args.batch_size}, CPU, "
              f"cores {os.cpu_count()}")
        bare_rate = bare(reference.extractor, batches)
        config = {"dataset_path": tmp, "device": "cpu", "workers": args.workers, "overwrite": True,
                  "visual": {"items": {"input_path": "images", "output_path": "out", "model": [{
                      "model_name": "ResNet50", "backend": "tensorflow", "weights": "none",
                      "output_layers": ["avg_pool"], "batch_size": args.batch_size}]}}}
        start = time.perf_counter()
        result = ducho.run(config, progress=False)
        seconds = time.perf_counter() - start
        assert result.jobs[0].extracted == len(paths)
        end_to_end = len(paths) / seconds
        extraction = len(paths) / (seconds - result.jobs[0].load_seconds)
        single = one_at_a_time(reference, paths)
        print(f"bare predict_on_batch on pre-decoded batches: {bare_rate:.1f} img/s")
        print(f"reference (one image at a time, one model call each, decode included): {single:.1f} img/s")
        print(f"ducho run (decode, preprocess, forward, write): {end_to_end:.1f} img/s end to end, {extraction:.1f} "
              f"img/s without the model build ({result.jobs[0].load_seconds:.1f} s)")
        print(f"ratio ducho / bare: {end_to_end / bare_rate:.3f} (without build {extraction / bare_rate:.3f}); "
              f"ratio ducho / reference: {end_to_end / single:.2f}x (without build {extraction / single:.2f}x)")


if __name__ == "__main__":
    main()
