"""End-to-end `ducho run` (JPEG folder in, .npy files out) against the bare model forward on the same images,
already decoded and preprocessed into batches in memory. ResNet-50 with random weights, channels_last on both
sides, `inference_mode`. Prints images/s of both and the ratio (goal: >= 0.9). The bare forward runs before and
after each ducho run and the ratio is taken against the mean of the two, because a shared machine's speed drifts
(here the same forward took 18 to 32 s within minutes); with several rounds, the median of the rounds' ratios.

    .venv/bin/python benchmarks/visual_throughput.py [--images 256] [--batch-size 32] [--device cpu] [--workers N]
        [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_jpegs(folder: Path, count: int) -> list[Path]:
    """Photos of mixed sizes (320x240 up to 1600x1200): smooth gradients with texture, as catalogues have."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sizes = [(320, 240), (640, 480), (800, 800), (1024, 768), (1600, 1200), (500, 700)]
    paths = []
    for n in range(count):
        width, height = sizes[n % len(sizes)]
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
        noise = rng.normal(0, 18, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:height, :width]
        image = np.clip(base + noise + rng.integers(0, 55), 0, 255).astype(np.uint8)
        path = folder / f"img{n:04d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="ducho decode processes (default: auto)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    import torch

    import ducho
    from ducho.backends.torch_vision import TorchVision
    from ducho.config.schema import VisualModelSpec

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp) / "images", args.images)
        reference = TorchVision(VisualModelSpec(model_name="resnet50", weights="none"), args.device)
        batches = [torch.from_numpy(np.stack([reference.loader(str(p)) for p in paths[i:i + args.batch_size]]))
                   for i in range(0, len(paths), args.batch_size)]
        model = reference.model.to(args.device, memory_format=torch.channels_last)
        print(f"{len(paths)} JPEGs, ResNet-50 (random weights), batch {args.batch_size}, device {args.device}, "
              f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}")
        with torch.inference_mode():
            model(batches[0][:4].to(args.device, memory_format=torch.channels_last))  # warm-up

        def bare() -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                for batch in batches:
                    model(batch.to(args.device, memory_format=torch.channels_last)).cpu()
            return len(paths) / (time.perf_counter() - start)

        ratios: list[tuple[float, float]] = []
        before = bare()
        for round_ in range(args.rounds):
            config = {"dataset_path": tmp, "device": args.device, "workers": args.workers, "overwrite": True,
                      "visual": {"items": {"input_path": "images", "output_path": "out", "model": [{
                          "model_name": "resnet50", "weights": "none", "output_layers": ["avgpool"],
                          "batch_size": args.batch_size}]}}}
            start = time.perf_counter()
            result = ducho.run(config, progress=False)
            seconds = time.perf_counter() - start
            assert result.jobs[0].extracted == len(paths)
            after = bare()
            rate = 2 / (1 / before + 1 / after)  # images/s of the mean bare time
            end_to_end = len(paths) / seconds
            extraction = len(paths) / (seconds - result.jobs[0].load_seconds)
            print(f"round {round_ + 1}: bare forward on pre-decoded batches {before:.1f} / {after:.1f} img/s (before / "
                  f"after) | ducho run (decode, preprocess, forward, write) {end_to_end:.1f} img/s, ratio "
                  f"{end_to_end / rate:.3f}; without the model build ({result.jobs[0].load_seconds:.1f} s) "
                  f"{extraction:.1f} img/s, ratio {extraction / rate:.3f}")
            ratios.append((end_to_end / rate, extraction / rate))
            before = after
        if args.rounds > 1:
            print(f"median over {args.rounds} rounds: ratio {statistics.median(r[0] for r in ratios):.3f}, without "
                  f"the model build {statistics.median(r[1] for r in ratios):.3f}")


if __name__ == "__main__":
    main()
