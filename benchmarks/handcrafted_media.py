"""Throughput of the handcrafted image and audio families on the bundled demo data, one process.

Per family: records/s of the family alone on already decoded inputs (decode excluded); then the decode alone and
the whole loader (decode + every family), as one worker process runs it. One warm-up pass first (imports, numba).
Wall-clock and process-CPU rates are both printed: on a busy machine the CPU rate is the steadier one.

    .venv/bin/python benchmarks/handcrafted_media.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ducho
from ducho.backends.handcrafted_audio import FAMILIES as AUDIO_FAMILIES
from ducho.backends.handcrafted_audio import HandcraftedAudio, audio_features
from ducho.backends.handcrafted_image import FAMILIES as IMAGE_FAMILIES
from ducho.backends.handcrafted_image import HandcraftedImage, image_features, load_image
from ducho.config.schema import AudioModelSpec, VisualModelSpec
from ducho.media.audio import read_audio

DEMO = Path(ducho.__file__).parent / "demo" / "data"


def rate(work: Callable[[Any], Any], inputs: Sequence[Any], rounds: int) -> tuple[float, float]:
    """Records per second of `work` over `inputs` by wall clock and by this process's CPU time, best of `rounds`."""
    wall = cpu = float("inf")
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for item in inputs:
            work(item)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return len(inputs) / wall, len(inputs) / max(cpu, 1e-9)


def table(title: str, rows: list[tuple[str, str, tuple[float, float]]]) -> str:
    lines = [title, f"  {'family':<18}{'dim':>6}{'rec/s wall':>12}{'rec/s CPU':>12}{'CPU ms/rec':>12}"]
    lines += [f"  {name:<18}{dim:>6}{wall:>12.1f}{cpu:>12.1f}{1000 / cpu:>12.2f}" for name, dim, (wall, cpu) in rows]
    return "\n".join(lines)


def bench_images(rounds: int) -> str:
    paths = sorted((DEMO / "visual" / "images").iterdir())
    extractor = HandcraftedImage(VisualModelSpec(model_name="handcrafted"), "cpu")
    params, shapes = extractor.params, extractor.layer_shapes()
    for path in paths:  # warm-up
        extractor.loader(path)
    decoded = [load_image(path, params["max_side"]) for path in paths]
    rows = [(name, str(shapes[name][0]), rate(lambda rgb, n=name: image_features(rgb, [n], params), decoded, rounds))
            for name in IMAGE_FAMILIES]
    rows.append(("(decode+resize)", "-", rate(lambda p: load_image(p, params["max_side"]), paths, rounds)))
    rows.append(("(loader, all)", str(sum(s[0] for s in shapes.values())), rate(extractor.loader, paths, rounds)))
    sizes = sorted({f"{rgb.shape[1]}x{rgb.shape[0]}" for rgb in decoded})
    return table(f"images: {len(paths)} demo files, decoded sizes {', '.join(sizes)}", rows)


def bench_audio(rounds: int) -> str:
    paths = sorted((DEMO / "audio" / "clips").iterdir())
    extractor = HandcraftedAudio(AudioModelSpec(model_name="handcrafted"), "cpu")
    params, shapes = extractor.params, extractor.layer_shapes()
    for path in paths:  # warm-up
        extractor.loader(path)
    waves = [read_audio(path, sample_rate=params["sample_rate"], mono=True) for path in paths]
    rows = [(name, str(shapes[name][0]), rate(lambda w, n=name: audio_features(w, [n], params), waves, rounds))
            for name in AUDIO_FAMILIES]
    rows.append(("(decode)", "-", rate(lambda p: read_audio(p, sample_rate=params["sample_rate"]), paths, rounds)))
    rows.append(("(loader, all)", str(sum(s[0] for s in shapes.values())), rate(extractor.loader, paths, rounds)))
    seconds = sum(len(w) for w in waves) / params["sample_rate"] / len(waves)
    return table(f"audio: {len(paths)} demo clips, {seconds:.1f} s on average at {params['sample_rate']} Hz", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(bench_images(args.rounds))
    print()
    print(bench_audio(args.rounds))


if __name__ == "__main__":
    main()
