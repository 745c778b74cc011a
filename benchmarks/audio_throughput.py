"""End-to-end `ducho run` (folder of 44.1 kHz stereo FLAC clips in, .npy files out) against the bare model forward
on the same clips, already decoded, resampled to 16 kHz mono and cut into the same windows, batched the same way.
WAV2VEC2_BASE with random weights, `last_hidden_state` mean-pooled, 10 s windows, `inference_mode`. Prints clips/s
and audio-seconds/s of both and the ratio (goal: >= 0.85), and the CPU seconds of both (this process plus its decode
workers), which a busy shared machine disturbs less than wall time.

Clips last 5-30 s (deterministic, mixed lengths). The default is 24 clips (~410 s of audio, about 3 minutes in all
on 2 cores): the full 100 clips (~1,750 s) take about 5 minutes per pass on 2 cores; `--clips 100` runs them.

    .venv/bin/python benchmarks/audio_throughput.py [--clips 24] [--batch-size 8] [--device cpu] [--workers N]
        [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RATE = 44100
GOLDEN = 0.6180339887


def clip_seconds(count: int) -> list[float]:
    """5-30 s, spread evenly over the range for any number of clips (golden-ratio sequence)."""
    return [5.0 + 25.0 * ((n * GOLDEN) % 1.0) for n in range(count)]


def make_clips(folder: Path, count: int) -> list[Path]:
    """Stereo 44.1 kHz FLAC: a few drifting tones per channel plus noise, different in every clip."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for n, seconds in enumerate(clip_seconds(count)):
        t = np.arange(round(seconds * RATE), dtype=np.float32) / RATE
        channels = []
        for _ in range(2):
            wave = np.zeros_like(t)
            for _ in range(3):
                freq = rng.uniform(80, 2000)
                wave += np.sin(2 * np.pi * (freq * t + rng.uniform(-3, 3) * t * t)).astype(np.float32) * 0.15
            channels.append(wave + rng.normal(0, 0.05, t.shape).astype(np.float32))
        path = folder / f"clip{n:04d}.flac"
        sf.write(path, np.clip(np.stack(channels, axis=1), -1, 1), RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (ducho's decode workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="ducho decode processes (default: auto)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    import torch

    import ducho
    from ducho.backends.audio_common import sub_batches
    from ducho.backends.torch_audio import TorchAudio
    from ducho.config.schema import AudioModelSpec

    model_spec = {"model_name": "WAV2VEC2_BASE", "weights": "none", "output_layers": ["last_hidden_state"],
                  "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_clips(Path(tmp) / "clips", args.clips)
        reference = TorchAudio(AudioModelSpec(**model_spec), args.device)
        waves = [reference.loader(str(p)) for p in paths]  # decoded and resampled beforehand, not timed
        audio_seconds = sum(w.shape[-1] for w in waves) / reference.sample_rate
        inputs = []  # ducho's batches of records, their windows, and its sub-batches of equal-shape windows
        for start in range(0, len(waves), args.batch_size):
            prepared = reference.prepare(waves[start:start + args.batch_size])
            inputs += [stacked["wave"] for _, stacked in sub_batches(prepared["windows"], args.batch_size)]
        module = reference.model.module
        print(f"{len(paths)} FLAC clips (44.1 kHz stereo, {audio_seconds:.0f} s of audio), WAV2VEC2_BASE (random "
              f"weights), {reference.windowing.window_seconds:g} s windows, batch {args.batch_size}, "
              f"{len(inputs)} forwards, device {args.device}, torch threads {torch.get_num_threads()}, "
              f"cores {os.cpu_count()}")
        with torch.inference_mode():
            module(inputs[0][:1, :16000].to(args.device))  # warm-up
        for round_ in range(args.rounds):
            cpu, start = cpu_seconds(), time.perf_counter()
            with torch.inference_mode():
                for wave in inputs:
                    module(wave.to(args.device))[0].cpu()
            bare_seconds, bare_cpu = time.perf_counter() - start, cpu_seconds() - cpu
            config = {"dataset_path": tmp, "device": args.device, "workers": args.workers, "overwrite": True,
                      "audio": {"items": {"input_path": "clips", "output_path": "out", "model": [model_spec]}}}
            cpu, start = cpu_seconds(), time.perf_counter()
            result = ducho.run(config, progress=False)
            seconds, run_cpu = time.perf_counter() - start, cpu_seconds() - cpu
            job = result.jobs[0]
            assert job.extracted == len(paths), f"{job.extracted} of {len(paths)} clips extracted"
            extraction_seconds = seconds - job.load_seconds
            print(f"round {round_ + 1}: bare forward on pre-decoded windows {len(paths) / bare_seconds:.2f} clips/s "
                  f"({audio_seconds / bare_seconds:.1f} audio-s/s) | ducho run (decode, resample, window, forward, "
                  f"write) {len(paths) / seconds:.2f} clips/s ({audio_seconds / seconds:.1f} audio-s/s), "
                  f"ratio {bare_seconds / seconds:.3f} (goal >= 0.85); without the model build "
                  f"({job.load_seconds:.1f} s) {audio_seconds / extraction_seconds:.1f} audio-s/s, "
                  f"ratio {bare_seconds / extraction_seconds:.3f}; CPU seconds bare {bare_cpu:.0f}, "
                  f"ducho {run_cpu:.0f}, ratio {bare_cpu / run_cpu:.3f}")


if __name__ == "__main__":
    main()
