"""Peak memory (max RSS) of `ducho run` on ONE clip of 10 s, 40 s, 10 min and 20 min (44.1 kHz stereo FLAC), each in a
fresh process: WAV2VEC2_BASE with random weights, default 10 s windows. A track's windows run `batch_size` at a time,
so memory is bounded by `batch_size` windows, never by the track: with batch 1 the 10 min clip should peak like the
10 s one, and with batch 4 the 10 and 20 min clips like the 40 s one (its 4 windows fill one forward). Goal: ratios
close to 1, far below the 60x length ratio. Decoding runs in worker processes
(unless --workers 0); their peak (RUSAGE_CHILDREN, which includes the pages shared with the parent at fork) is
printed beside the main process's.

    .venv/bin/python benchmarks/audio_memory.py [--short 10] [--long 600] [--batch-size 4] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RATE = 44100
BLOCK = RATE * 10

CHILD = """
import resource, sys, ducho
result = ducho.run(sys.argv[1], progress=False)
print(result.jobs[0].extracted, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def write_clip(path: Path, seconds: float) -> None:
    """Stereo 44.1 kHz FLAC of drifting tones plus noise, written block by block."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    total = round(seconds * RATE)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as out:
        for start in range(0, total, BLOCK):
            t = np.arange(start, min(start + BLOCK, total), dtype=np.float64) / RATE
            left = 0.2 * np.sin(2 * np.pi * (220 * t + 0.5 * np.sin(0.1 * t)))
            right = 0.2 * np.sin(2 * np.pi * (330 * t + 0.3 * np.sin(0.07 * t)))
            block = np.stack([left, right], axis=1) + rng.normal(0, 0.05, (t.size, 2))
            out.write(np.clip(block, -1, 1).astype(np.float32))


def peak_rss_mib(seconds: float, batch_size: int, workers: int | None) -> tuple[int, float, float]:
    """(clips extracted, main process peak MiB, decode workers' peak MiB) of one run in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "clips").mkdir()
        write_clip(Path(tmp) / "clips" / "clip.flac", seconds)
        config = Path(tmp) / "c.yml"
        config.write_text(f"""dataset_path: {tmp}
device: cpu
workers: {"null" if workers is None else workers}
audio:
  items:
    input_path: clips
    output_path: out
    model: [{{model_name: WAV2VEC2_BASE, weights: none, batch_size: {batch_size}}}]
""")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", CHILD, str(config)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        return int(out[0]), int(out[1]) / 1024, int(out[2]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=float, default=10.0, help="seconds of the short clip (one window)")
    parser.add_argument("--long", type=float, default=600.0, help="seconds of the long clip")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="ducho decode processes (default: auto)")
    args = parser.parse_args()
    window = 10.0
    full = window * args.batch_size  # the shortest clip whose windows fill one forward of `batch_size` windows
    runs = [(1, args.short), (1, args.long), (args.batch_size, args.short), (args.batch_size, full),
            (args.batch_size, args.long), (args.batch_size, 2 * args.long)]
    peaks = {}
    for batch_size, seconds in runs:
        extracted, main_mib, worker_mib = peak_rss_mib(seconds, batch_size, args.workers)
        assert extracted == 1, f"extracted {extracted} clips"
        peaks[batch_size, seconds] = main_mib
        print(f"batch {batch_size}, {seconds:g} s clip ({max(1, round(seconds / window))} windows): peak RSS "
              f"{main_mib:.0f} MiB (decode worker {worker_mib:.0f} MiB)", flush=True)
    b = args.batch_size
    print(f"WAV2VEC2_BASE, {window:g} s windows, workers {args.workers or 'auto'}. Ratios (goal: close to 1, far "
          f"below the {args.long / args.short:.0f}x length ratio):\n"
          f"  batch 1 (one window per forward for both): {args.long:g} s / {args.short:g} s = "
          f"{peaks[1, args.long] / peaks[1, args.short]:.3f}\n"
          f"  batch {b}: {args.long:g} s / {full:g} s (both fill forwards of {b} windows) = "
          f"{peaks[b, args.long] / peaks[b, full]:.3f}; {2 * args.long:g} s / {args.long:g} s = "
          f"{peaks[b, 2 * args.long] / peaks[b, args.long]:.3f}\n"
          f"  batch {b}: {args.long:g} s / {args.short:g} s = {peaks[b, args.long] / peaks[b, args.short]:.3f} "
          f"(the {args.short:g} s clip runs a 1-window forward: this is the batch's size, not the track's)")


if __name__ == "__main__":
    main()
