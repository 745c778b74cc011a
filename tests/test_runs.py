"""Runs end to end: matrix format, resume after a kill, re-runs, strict mode, failure reports, manifests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import ducho
from conftest import TEXTS, write_tsv
from ducho.errors import DuchoError, StrictModeError
from ducho.writers import is_temporary


def config(tmp_path: Path, model_dir: Path, source: str = "items", fmt: str = "npy", rows: list | None = None,
           **model: object) -> dict:
    spec = {"model_name": str(model_dir), "backend": "transformers", "output_layers": ["last_hidden_state",
            "pooler_output"], "batch_size": 4, **model}
    if source == "items":
        rows = rows or [[f"i{n:02d}", t] for n, t in enumerate(TEXTS)] + [["i99", ""], ["i00", "duplicate"]]
        write_tsv(tmp_path / "in.tsv", ["item_id", "text"], rows)
    else:
        write_tsv(tmp_path / "in.tsv", ["user", "item", "text"],
                  [[f"u{n % 4}", f"i{n:02d}", t] for n, t in enumerate(TEXTS)])
    return {"dataset_path": str(tmp_path), "device": "cpu", "format": fmt,
            "textual": {source: {"input_path": "in.tsv", "output_path": "out", "model": [spec]}}}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every feature file under `folder` (manifests and reports excluded: they hold times)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".npy", ".tsv") and p.name != "failures.tsv"}


def test_matrix_format_rows_follow_ids_and_equal_npy_files(tmp_path: Path, tiny_bert: Path) -> None:
    per_item = ducho.run(config(tmp_path / "npy", tiny_bert), progress=False).jobs[0].output_dir
    matrix = ducho.run(config(tmp_path / "mat", tiny_bert, fmt="matrix"), progress=False).jobs[0].output_dir
    features = np.load(matrix / "pooler_output" / "features.npy")
    ids = (matrix / "pooler_output" / "ids.tsv").read_text().splitlines()
    assert ids[0] == "item" and ids[1:] == [f"i{n:02d}" for n in range(len(TEXTS))]  # input order
    assert features.shape == (len(TEXTS), 32) and features.dtype == np.float32
    for row, item in enumerate(ids[1:]):
        assert np.abs(features[row] - np.load(per_item / "pooler_output" / f"{item}.npy")).max() < 1e-5


def test_matrix_interactions_ids_have_user_and_item(tmp_path: Path, tiny_bert: Path) -> None:
    job = ducho.run(config(tmp_path, tiny_bert, source="interactions", fmt="matrix"), progress=False).jobs[0]
    lines = (job.output_dir / "last_hidden_state" / "ids.tsv").read_text().splitlines()
    assert lines[0] == "user\titem"
    assert lines[1:4] == ["u0\ti00", "u1\ti01", "u2\ti02"]
    assert np.load(job.output_dir / "last_hidden_state" / "features.npy").shape == (len(TEXTS), 32)


def test_skips_are_reported_and_rerun_resumes(tmp_path: Path, tiny_bert: Path) -> None:
    cfg = config(tmp_path, tiny_bert)
    first = ducho.run(cfg, progress=False).jobs[0]
    report = (first.output_dir / "failures.tsv").read_text().splitlines()
    assert report[0] == "id\tsource\treason"
    reasons = {line.split("\t")[0]: line.split("\t")[2] for line in report[1:]}
    assert reasons["i99"] == "empty text" and reasons["i00"].startswith("duplicate id")
    assert first.extracted == len(TEXTS) and first.counts["pooler_output"] == len(TEXTS)
    manifest = json.loads((first.output_dir / "pooler_output" / "manifest.json").read_text())
    for key in ("fingerprint", "config_sha256", "libraries", "shape", "count", "model", "input_sha256"):
        assert key in manifest
    assert manifest["status"] == "complete" and manifest["shape"] == [32] and manifest["count"] == len(TEXTS)
    assert "file_sha256" in manifest["model"]
    before = snapshot(first.output_dir)
    second = ducho.run(cfg, progress=False).jobs[0]
    assert second.extracted == 0 and second.resumed == len(TEXTS)
    assert snapshot(second.output_dir) == before
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("fmt", ["npy", "matrix"])
def test_a_rerun_restores_deleted_outputs_of_a_complete_run(tmp_path: Path, tiny_bert: Path, fmt: str) -> None:
    cfg = config(tmp_path, tiny_bert, fmt=fmt)
    first = ducho.run(cfg, progress=False).jobs[0]
    before = snapshot(first.output_dir)
    lost = first.output_dir / "pooler_output" / ("i03.npy" if fmt == "npy" else "features.npy")
    lost.unlink()
    second = ducho.run(cfg, progress=False).jobs[0]
    assert second.extracted == len(TEXTS) and snapshot(second.output_dir) == before  # its one chunk redone
    manifest = json.loads((lost.parent / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["count"] == len(TEXTS)


def test_changed_settings_refuse_to_mix_unless_overwrite(tmp_path: Path, tiny_bert: Path) -> None:
    ducho.run(config(tmp_path, tiny_bert), progress=False)
    changed = config(tmp_path, tiny_bert, pooling="max")
    with pytest.raises(DuchoError, match="other settings"):
        ducho.run(changed, progress=False)
    job = ducho.run(changed, progress=False, overwrite=True).jobs[0]
    assert job.extracted == len(TEXTS)


def test_strict_mode_stops_at_first_skip(tmp_path: Path, tiny_bert: Path) -> None:
    cfg = config(tmp_path, tiny_bert)
    cfg["strict"] = True
    with pytest.raises(StrictModeError, match="i99|i00"):
        ducho.run(cfg, progress=False)


# Each run of the next test in a process of its own, with shards of 64 records (2048 would take thousands of texts
# for a complete shard before the kill). With KILL_AT it kills itself with SIGKILL half-way through writing that file
# (a temporary left behind, as a real kill mid-write leaves one): deterministic, where killing from outside raced a
# fast machine to the run's end.
RUN = """
import os, signal, sys
from ducho import shards, writers
from ducho.cli import main
shards.SHARD = 64
kill_at, written, save_npy = int(os.environ.get("KILL_AT", 0)), 0, writers.save_npy
def save_or_die(path, array, dtype=writers.FLOAT32):
    global written
    written += 1
    if written == kill_at:
        writers.temporary(path).write_bytes(b"half a file")
        os.kill(os.getpid(), signal.SIGKILL)
    save_npy(path, array, dtype)
writers.save_npy = save_or_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_to_identical_files(tmp_path: Path, tiny_bert: Path) -> None:
    texts = [f"{TEXTS[n % len(TEXTS)]} {n}" for n in range(300)]  # 5 shards; killed in the fourth
    rows = [[f"i{n:05d}", t] for n, t in enumerate(texts)]
    for name in ("whole", "killed"):
        cfg = config(tmp_path / name, tiny_bert, rows=rows, batch_size=8)
        (tmp_path / name / "c.yml").write_text(yaml.safe_dump(cfg))

    def run(name: str, kill_at: int = 0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", RUN, "run", "--no-progress", str(tmp_path / name / "c.yml")],
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "KILL_AT": str(kill_at)},
                              capture_output=True, text=True)

    assert run("whole").returncode == 0
    killed = run("killed", kill_at=2 * 3 * 64 + 20)  # two layers' files: three shards done, the fourth not
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list((tmp_path / "killed" / "out").rglob("*.npy"))) == 2 * 3 * 64 + 19
    assert [p.name for p in (tmp_path / "killed" / "out").rglob("*") if is_temporary(p.name)]  # the half-written file
    resumed = run("killed")
    assert resumed.returncode == 0 and "resumed 192" in resumed.stdout  # complete shards were not recomputed
    whole = snapshot(tmp_path / "whole" / "out")
    assert sum(name.endswith(".npy") for name in whole) == 2 * len(texts)
    assert snapshot(tmp_path / "killed" / "out") == whole
    assert not [p for p in (tmp_path / "killed").rglob("*") if is_temporary(p.name)]  # nor the kill's temporary


@pytest.mark.parametrize("shape", [(1,), (384,), (2048, 7, 7), (3, 0)])
def test_feature_files_are_the_bytes_np_save_writes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """Features are saved with a header made once per shape; the files must stay exactly what np.save writes."""
    import io

    from ducho.writers import save_npy

    array = np.random.default_rng(0).normal(size=shape)  # float64 and possibly non-contiguous inputs are converted
    if array.ndim == 3:
        array = array.transpose(0, 2, 1)
    save_npy(tmp_path / "a.npy", array)
    expected = io.BytesIO()
    np.save(expected, np.ascontiguousarray(array, dtype=np.float32))
    assert (tmp_path / "a.npy").read_bytes() == expected.getvalue()
    assert np.array_equal(np.load(tmp_path / "a.npy"), array.astype(np.float32))
