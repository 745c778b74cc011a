"""`executor: ray` (a local Ray cluster started by the run, 2 CPUs) against `executor: local` on the same jobs: 256
JPEGs through ResNet-50 (random weights) and 5,000 texts through MiniLM (the packaged copy). Prints records/s of both
and the ratio ray/local (goal: >= 0.85 on a 2-core machine), with the cluster start-up reported apart (its time is
taken out of the Ray run's; the model actors' start is not: it is part of every Ray job). Also peak memory (RSS of
the process tree) of a 5,000- and a 50,000-text Parquet run on both executors with `--memory` (instead).

The runs are calls of `ducho.run` in this process: after the first, the local executor finds torch and the model's
libraries imported, while a Ray job's workers are new processes that import them every time. `--fresh` runs each
`ducho run` in a new process instead, as a user does, so that both executors pay their imports (the start-up of the
cluster, read from the run's log, still apart).

    .venv/bin/python benchmarks/ray_overhead.py [--images 256] [--texts 5000] [--rounds 1] [--scale K] [--fresh]
                                                [--memory]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _texts import make_texts, write_items  # noqa: E402
from visual_throughput import make_jpegs  # noqa: E402


def configs(root: Path, suffix: str = "") -> dict[str, dict]:
    return {
        "images": {"dataset_path": str(root), "device": "cpu", "visual": {"items": {
            "input_path": f"images{suffix}", "output_path": "out-images",
            "model": [{"model_name": "resnet50", "weights": "none", "batch_size": 32}]}}},
        "texts": {"dataset_path": str(root), "device": "cpu", "textual": {"items": {
            "input_path": f"texts{suffix}.tsv", "output_path": "out-texts",
            "model": [{"model_name": "sentence-transformers/all-MiniLM-L6-v2", "batch_size": 64}]}}},
    }


def scaled(root: Path, name: str, scale: int, small: tuple[float, float, int]) -> None:
    """One more run of each executor on `scale` times the records: per-record cost (the marginal ratio, what a long
    job tends to) apart from the fixed cost of a job (on Ray: its workers starting, importing the libraries, the
    model actors building the model)."""
    _, ray_small, count = small
    local_small, _, _ = timed(configs(root)[name], "local")  # again: the first local run imported the libraries
    local, _, big = timed(configs(root, f"-x{scale}")[name], "local")
    ray, _, _ = timed(configs(root, f"-x{scale}")[name], "ray")
    per_local, per_ray = (local - local_small) / (big - count), (ray - ray_small) / (big - count)
    fixed = (ray_small - count * per_ray) - (local_small - count * per_local)
    print(f"{name}: {big} records; local {big / local:7.1f} rec/s; ray {big / ray:7.1f} rec/s; ratio ray/local "
          f"{local / ray:.3f}. Per record (from the {count} and {big} runs): ratio {per_local / per_ray:.3f}; the Ray "
          f"job's fixed cost beyond the local one's {fixed:.1f} s", flush=True)


def timed(config: dict, executor: str, fresh: bool = False) -> tuple[float, float, int]:
    """(seconds of the run less the cluster start-up, the start-up, records) of one run in this process, or of
    `ducho run` in a new one (`fresh`)."""
    if fresh:
        return timed_process(config, executor)
    import ducho
    from ducho import ray_executor

    startup: list[float] = []
    original = ray_executor.RayExecutor.__init__

    def init(self: object, cfg: object) -> None:
        original(self, cfg)
        startup.append(self.startup_seconds)  # type: ignore[attr-defined]

    ray_executor.RayExecutor.__init__ = init  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        result = ducho.run({**config, "executor": executor, "ray": {"address": "local", "num_cpus": 2}},
                           overwrite=True, progress=False)
        seconds = time.perf_counter() - started
    finally:
        ray_executor.RayExecutor.__init__ = original  # type: ignore[method-assign]
    up = startup[0] if startup else 0.0
    return seconds - up, up, result.jobs[0].extracted


def timed_process(config: dict, executor: str) -> tuple[float, float, int]:
    import yaml

    path = Path(config["dataset_path"]) / f"fresh-{executor}.yml"
    path.write_text(yaml.safe_dump({**config, "executor": executor, "ray": {"address": "local", "num_cpus": 2}}))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ducho", "run", str(path), "--overwrite", "--no-progress"],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    startup = re.search(r"connected in ([0-9.]+) s", done.stderr)
    counts = [int(n) for n in re.findall(r"([0-9]+) extracted", done.stderr)]
    assert counts, done.stderr[-2000:]
    up = float(startup.group(1)) if startup else 0.0
    return seconds - up, up, counts[-1]


def peak_rss(command: list[str]) -> float:
    """Peak resident memory (MiB) of a command and all its children (Ray's workers included), sampled every 50 ms."""
    import psutil

    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    process.wait()
    done.set()
    thread.join()
    return peak


def memory(root: Path) -> None:
    import yaml

    for count in (5000, 50000):
        write_items(root / f"texts{count}.tsv", make_texts(count, seed=1, max_words=12))  # short: minutes, not hours
        for executor in ("local", "ray"):
            config = {"dataset_path": str(root), "device": "cpu", "format": "parquet", "executor": executor,
                      "ray": {"address": "local", "num_cpus": 2}, "textual": {"items": {
                          "input_path": f"texts{count}.tsv", "output_path": f"mem-{executor}-{count}",
                          "model": [{"model_name": "sentence-transformers/all-MiniLM-L6-v2", "batch_size": 64}]}}}
            path = root / f"mem-{executor}-{count}.yml"
            path.write_text(yaml.safe_dump(config))
            mib = peak_rss([sys.executable, "-m", "ducho", "run", str(path), "--no-progress"])
            print(f"memory: {count:>6} texts, parquet, executor {executor:5s}: peak RSS of the process tree "
                  f"{mib:7.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--texts", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="only peak memory of 5,000 vs 50,000 texts")
    parser.add_argument("--only", choices=["images", "texts"], help="one of the two jobs")
    parser.add_argument("--scale", type=int, default=1, help="also run K times the records (per-record ratio)")
    parser.add_argument("--fresh", action="store_true", help="each run a `ducho run` in a new process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.memory:
            memory(root)
            return
        make_jpegs(root / "images", args.images)
        write_items(root / "texts.tsv", make_texts(args.texts))
        if args.scale > 1:
            make_jpegs(root / f"images-x{args.scale}", args.images * args.scale)
            write_items(root / f"texts-x{args.scale}.tsv", make_texts(args.texts * args.scale))
        for name, config in configs(root).items():
            if args.only and name != args.only:
                continue
            ratios, times = [], []
            for round_ in range(args.rounds):
                local, _, count = timed(config, "local", args.fresh)
                ray, startup, ray_count = timed(config, "ray", args.fresh)
                assert ray_count == count, (ray_count, count)
                ratios.append(local / ray)
                times.append((local, ray, count))
                print(f"{name}: {count} records; local {count / local:7.1f} rec/s; ray {count / ray:7.1f} rec/s "
                      f"(cluster start-up {startup:.1f} s apart); ratio ray/local {local / ray:.3f} "
                      f"(round {round_ + 1})", flush=True)
            print(f"{name}: median ratio ray/local over {len(ratios)} round(s): {statistics.median(ratios):.3f}")
            if args.scale > 1 and not args.fresh:
                scaled(root, name, args.scale, times[-1])


if __name__ == "__main__":
    main()
