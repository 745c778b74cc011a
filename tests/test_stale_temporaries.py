"""A run removes the temporary files that an earlier, killed run left in the folders it writes, and nothing else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import ducho
from conftest import write_tsv
from ducho.config.load import load_config
from ducho.plan import build_plan
from ducho.writers import is_temporary, temporary

ITEMS = ["Light running shoe for long distances.", "Espresso machine with a steam wand, great crema!",
         "Tent for two, survives heavy rain?", "Kids love this story book.", "ok"]
DEAD = 4194305  # above the largest pid_max (2**22): never a running process
THREAD = 139919061849792


def stale(folder: Path, name: str, pid: int = DEAD) -> Path:
    """A temporary of Ducho's naming for `name`, as a run killed while writing it leaves it."""
    path = folder / f".{name}.{pid}.{THREAD}.tmp"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half written")
    return path


@pytest.mark.parametrize("fmt", ["npy", "matrix", "sparse"])
def test_a_run_removes_a_killed_runs_temporaries_and_only_those(tmp_path: Path, fmt: str) -> None:
    write_tsv(tmp_path / "items.tsv", ["item_id", "description"], [[f"i{n}", t] for n, t in enumerate(ITEMS)])
    model = {"model_name": "tfidf", "backend": "handcrafted", "output_layers": ["tfidf", "stats"]}
    config = {"dataset_path": str(tmp_path), "device": "cpu", "format": fmt,
              "textual": {"items": {"input_path": "items.tsv", "output_path": "out", "model": [model]}}}
    job = build_plan(load_config(config))[0]
    layers = [job.layer_dir(layer) for layer in ("tfidf", "stats")]
    planted = [stale(job.output_dir, "failures.tsv")]
    for layer in layers:
        planted += [stale(layer, name) for name in ("i0.npy", "t00963.npy", "manifest.json", "tfidf_vocabulary.json",
                                                    "features.npy", "features.npz", "ids.tsv")]
        planted += [stale(layer / ".parts", name) for name in ("000000.npy", "000000.npz", "000000.ids.tsv")]
        planted.append(stale(layer, "i1.npy", pid=os.getpid()))  # a restarted container's run has the same pid
    running = stale(layers[0], "i2.npy", pid=os.getppid())  # another process, still running, writing here
    users = {folder / name: f"{name} of the user".encode() for folder in (job.output_dir, *layers)
             for name in ("notes.tmp", "my.npy.backup", ".hidden.tmp", ".i3.npy.tmp")}
    for path, content in users.items():
        path.write_bytes(content)

    result = ducho.run(config, progress=False).jobs[0]

    assert [path for path in planted if path.exists()] == []
    assert running.exists()
    assert {path: path.read_bytes() for path in users} == users
    assert result.extracted == len(ITEMS) and result.counts == {"tfidf": len(ITEMS), "stats": len(ITEMS)}
    assert (job.output_dir / "failures.tsv").read_text(encoding="utf-8") == "id\tsource\treason\n"
    for layer in layers:
        manifest = json.loads((layer / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["status"] == "complete" and manifest["count"] == len(ITEMS)
        if fmt == "npy":
            assert sorted(p.name for p in layer.glob("*.npy")) == [f"i{n}.npy" for n in range(len(ITEMS))]
        else:
            assert (layer / "ids.tsv").read_text(encoding="utf-8").split() == ["item"] + [f"i{n}" for n in range(5)]
            assert (layer / f"features.{'npy' if fmt == 'matrix' else 'npz'}").is_file()
            assert not (layer / ".parts").exists()
    if fmt == "matrix":
        assert np.load(layers[1] / "features.npy").shape == (len(ITEMS), 10)
    leftovers = [p for p in tmp_path.rglob("*") if is_temporary(p.name) and p != running]
    assert leftovers == []


@pytest.mark.parametrize(("name", "ours"), [
    (temporary(Path("out/features.npy")).name, True),
    (temporary(Path("manifest.json")).name, True),
    (".t00963.npy.9006.139919061849792.tmp", True),  # seen in a layer folder after a kill -9
    ("notes.tmp", False), ("my.npy.backup", False), (".hidden.tmp", False), (".i3.npy.tmp", False),
    (".i3.npy.12.tmp", False), ("i3.npy.12.34.tmp", False), ("i3.npy", False),
])
def test_one_pattern_makes_and_recognises_the_temporary_names(name: str, ours: bool) -> None:
    assert is_temporary(name) is ours
