"""Peak memory (max RSS) of `ducho run` on ONE 10-second clip and on ONE 10-minute clip (44.1 kHz stereo FLAC),
each in a fresh process: WAV2VEC2_BASE with random weights, default 10 s windows, batch size 4. Goal: memory bounded
by the window, not the track: ratio close to 1, far below the 60x length ratio. Decoding runs in worker processes
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
    parser.add_argument("--short", type=float, default=10.0, help="seconds of the short clip")
    parser.add_argument("--long", type=float, default=600.0, help="seconds of the long clip")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="ducho decode processes (default: auto)")
    args = parser.parse_args()
    short = peak_rss_mib(args.short, args.batch_size, args.workers)
    long = peak_rss_mib(args.long, args.batch_size, args.workers)
    assert short[0] == long[0] == 1, f"extracted {short[0]} and {long[0]} clips"
    print(f"WAV2VEC2_BASE, 10 s windows, batch {args.batch_size}, workers {args.workers or 'auto'}: "
          f"{args.short:g} s clip -> peak RSS {short[1]:.0f} MiB (decode worker {short[2]:.0f} MiB); "
          f"{args.long:g} s clip -> {long[1]:.0f} MiB (decode worker {long[2]:.0f} MiB); "
          f"ratio {long[1] / short[1]:.3f} (worker {long[2] / max(short[2], 1e-9):.3f}); length ratio "
          f"{args.long / args.short:.0f}x (goal: ratio close to 1)")


if __name__ == "__main__":
    main()
