"""Peak memory (max RSS) of `ducho run` on 5,000 and on 50,000 short texts, each in a fresh process.
Goal: the larger run within 10% of the smaller one (memory does not grow with the dataset).

    .venv/bin/python benchmarks/text_memory.py [--small 5000] [--large 50000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _texts import make_texts, write_items  # noqa: E402

CHILD = """
import resource, sys, ducho
result = ducho.run(sys.argv[1], progress=False)
print(result.jobs[0].extracted, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib(count: int, fmt: str) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        write_items(Path(tmp) / "items.tsv", make_texts(count, max_words=40))
        config = Path(tmp) / "c.yml"
        config.write_text(f"""dataset_path: {tmp}
device: cpu
format: {fmt}
textual:
  items:
    input_path: items.tsv
    output_path: out
    model: [{{model_name: sentence-transformers/all-MiniLM-L6-v2, backend: sentence_transformers, batch_size: 64}}]
""")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", CHILD, str(config)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        return int(out[0]), int(out[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=50000)
    parser.add_argument("--format", default="npy", choices=["npy", "matrix"])
    args = parser.parse_args()
    small = peak_rss_mib(args.small, args.format)
    large = peak_rss_mib(args.large, args.format)
    print(f"format {args.format}: {small[0]} texts -> peak RSS {small[1]:.0f} MiB; "
          f"{large[0]} texts -> {large[1]:.0f} MiB; ratio {large[1] / small[1]:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
