"""How records are decoded beside the model: worker counts, their priority, every worker sharing every batch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ducho import loading, run
from ducho.loading import Decoding, plan_decoding


@pytest.mark.parametrize(("requested", "device", "cores", "threads", "workers", "nice"), [
    (None, "cpu", 2, 2, 1, 19),     # the model's threads fill the cores: decode in their idle time
    (None, "cpu", 1, 1, 1, 19),
    (2, "cpu", 2, 2, 2, 19),
    (3, "cpu", 2, 2, 3, 19),
    (0, "cpu", 2, 2, 0, 19),
    (None, "cpu", 16, 8, 4, 5),     # spare cores: decode beside the forward
    (None, "cpu", 8, 7, 1, 5),
    (1, "cpu", 16, 8, 1, 5),
    (None, "cuda:0", 16, None, 15, 5),  # the forward runs on the GPU: every core but one decodes
    (None, "cuda:0", 64, None, 32, 5),
    (None, "cuda:0", 2, None, 1, 5),
])
def test_plan_decoding(requested: int | None, device: str, cores: int, threads: int | None, workers: int,
                       nice: int) -> None:
    assert plan_decoding(requested, device, cores=cores, model_threads=threads) == Decoding(workers, nice)


def test_every_worker_shares_every_batch_at_the_planned_priority(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch is cut into one piece per worker (so the first batch is not decoded by one worker alone while
    the others wait for the next); workers (forked after the patch) log their pid and niceness per record."""
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    for n in range(24):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{n:02d}.jpg")
    log = tmp_path / "decoded.txt"
    original_load = loading.load_one

    def logged_load(loader, payload):
        with log.open("a") as handle:
            handle.write(f"{Path(payload).stem} {os.getpid()} {os.nice(0)}\n")
        return original_load(loader, payload)

    monkeypatch.setattr(loading, "load_one", logged_load)
    monkeypatch.setattr("ducho.runner.plan_decoding", lambda *args: Decoding(2, 19))
    config = {"dataset_path": str(tmp_path), "device": "cpu", "visual": {"items": {
        "input_path": "images", "output_path": "out",
        "model": [{"model_name": "resnet18", "weights": "none", "output_layers": ["avgpool"], "batch_size": 8}]}}}
    assert run(config, progress=False).jobs[0].extracted == 24
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) == 24 and {int(nice) for _, _, nice in rows} == {19}
    pid_of = {stem: pid for stem, pid, _ in rows}
    for first in range(0, 24, 8):  # batches are consecutive ids: each one decoded by both workers, 4 and 4
        pids = [pid_of[f"{n:02d}"] for n in range(first, first + 8)]
        assert len(set(pids)) == 2 and pids.count(pids[0]) == 4
    assert os.getpid() not in {int(pid) for pid in pid_of.values()}
