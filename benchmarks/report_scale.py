"""`ducho report` at scale: time and peak memory for N x D vectors (default 100,000 x 768, format matrix).

The layer is written chunk by chunk (clustered vectors with planted exact and near duplicates and NaN rows, and a
labels file), then the report runs in a child process, whose peak resident memory (VmHWM, Linux) is measured alone.

    .venv/bin/python benchmarks/report_scale.py [--records 100000] [--dim 768] [--format matrix|npy|parquet]
        [--sample 2000] [--umap yes|no]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
if sys.argv[5] == "no":
    sys.modules["umap"] = None  # as if umap-learn were not installed
from ducho.report import write_report
started = time.perf_counter()
page = write_report(sys.argv[1], sys.argv[2], labels=sys.argv[3], sample=int(sys.argv[4]))
seconds = time.perf_counter() - started
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"seconds": seconds, "peak_kib": int(status["VmHWM"].split()[0]), "bytes": page.stat().st_size}))
"""


def write_layer(folder: Path, fmt: str, records: int, dim: int, chunk: int = 10_000) -> Path:
    """A layer of `records` clustered vectors (50 clusters), planted duplicates and NaN rows; returns the labels."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, dim)).astype(np.float32)
    layer = folder / "features" / "bench" / "torch" / "model" / "embedding"
    layer.mkdir(parents=True)
    ids = [f"item{i:07d}" for i in range(records)]
    cluster = rng.integers(0, 50, records)
    if fmt == "matrix":  # the .npy header, then the rows appended chunk by chunk
        out = open(layer / "features.npy", "wb")  # noqa: SIM115 - closed below
        np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (records, dim)})
    parts = []
    for start in range(0, records, chunk):
        stop = min(start + chunk, records)
        block = centres[cluster[start:stop]] + rng.normal(size=(stop - start, dim)).astype(np.float32)
        if start == 0:
            block[1] = block[0]  # an exact duplicate
            block[3] = block[2] + 1e-4  # a near duplicate
            block[5, 0] = np.nan
        if fmt == "matrix":
            out.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
        elif fmt == "npy":
            for offset, row in enumerate(block):
                np.save(layer / f"{ids[start + offset]}.npy", row)
        else:
            parts.append(_parquet_part(layer, len(parts), ids[start:stop], block))
    if fmt == "matrix":
        out.close()
        (layer / "ids.tsv").write_text("item\n" + "\n".join(ids) + "\n")
    manifest = {"status": "complete", "format": fmt, "modality": "visual", "source": "items", "layer": "embedding",
                "shape": [dim], "count": records, "model_settings": {"model_name": "bench/model"}}
    (layer / "manifest.json").write_text(json.dumps(manifest))
    labels = folder / "labels.tsv"
    labels.write_text("item\tcluster\n" + "".join(f"{i}\tc{c}\n" for i, c in zip(ids, cluster)))
    return labels


def _parquet_part(layer: Path, index: int, ids: list[str], block: np.ndarray) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (layer / "shards").mkdir(exist_ok=True)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), block.shape[1])
    table = pa.table({"id": pa.array(ids), "vector": vectors})
    table = table.replace_schema_metadata({b"ducho.shape": json.dumps([block.shape[1]]).encode()})
    name = f"shards/part-{index:05d}.parquet"
    pq.write_table(table, layer / name)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--format", default="matrix", choices=["matrix", "npy", "parquet"])
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--umap", default="yes", choices=["yes", "no"], help="no: as if umap-learn were not installed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ducho-report-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        labels = write_layer(folder, args.format, args.records, args.dim)
        print(f"wrote {args.records:,} x {args.dim} ({args.format}) in {time.perf_counter() - started:.1f} s")
        done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(folder / "report.html"), str(labels),
                               str(args.sample), args.umap], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    data_mib = args.records * args.dim * 4 / 2**20
    print(f"report of {args.records:,} x {args.dim} vectors ({data_mib:,.0f} MiB as float32, format {args.format}, "
          f"sample {args.sample}, UMAP {args.umap}): {result['seconds']:.1f} s, peak memory "
          f"{result['peak_kib'] / 1024:,.0f} MiB (whole process), page {result['bytes'] / 2**20:.2f} MiB")
    writer_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"this process's peak while writing the data: {writer_peak:,.0f} MiB")


if __name__ == "__main__":
    main()
