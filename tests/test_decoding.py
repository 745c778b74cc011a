"""How records are decoded beside the model: worker counts, their priority, every worker sharing every batch."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ducho import loading, run
from ducho.loading import Decoding, plan_decoding


def _images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True)
    for n in range(count):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{n:02d}.png")


def _logging_loads(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers (forked after the patch) append `<stem> <pid> <niceness>` per decoded record."""
    original_load = loading.load_one

    def logged_load(loader, payload):
        with log.open("a") as handle:
            handle.write(f"{Path(payload).stem} {os.getpid()} {os.nice(0)}\n")
        return original_load(loader, payload)

    monkeypatch.setattr(loading, "load_one", logged_load)


def _vectors(root: Path, layer: str = "avgpool") -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(root.rglob(f"{layer}/*.npy"))}


def _config(tmp_path: Path, batch_size: int = 4, model: dict | None = None) -> dict:
    model = model or {"model_name": "resnet18", "weights": "none", "output_layers": ["avgpool"]}
    return {"dataset_path": str(tmp_path), "device": "cpu", "workers": 1, "visual": {"items": {
        "input_path": "images", "output_path": "out", "model": [{**model, "batch_size": batch_size}]}}}


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
    _images(tmp_path / "images", 24)
    log = tmp_path / "decoded.txt"
    _logging_loads(log, monkeypatch)
    monkeypatch.setattr("ducho.runner.plan_decoding", lambda *args: Decoding(2, 19))
    assert run(_config(tmp_path, batch_size=8), progress=False).jobs[0].extracted == 24
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) == 24 and {int(nice) for _, _, nice in rows} == {19}
    pid_of = {stem: pid for stem, pid, _ in rows}
    for first in range(0, 24, 8):  # batches are consecutive ids: each one decoded by both workers, 4 and 4
        pids = [pid_of[f"{n:02d}"] for n in range(first, first + 8)]
        assert len(set(pids)) == 2 and pids.count(pids[0]) == 4
    assert os.getpid() not in {int(pid) for pid in pid_of.values()}


@pytest.mark.parametrize("backend", ["torch", "transformers"])
def test_decoding_starts_before_the_model_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   request: pytest.FixtureRequest, backend: str) -> None:
    """The build waits until a worker has decoded a record: it only returns if decoding started first; each
    record is decoded once (the early loader was the model's own) and the files equal a run decoding after it."""
    model = {"model_name": str(request.getfixturevalue("tiny_vit")), "backend": "transformers",
             "output_layers": ["pooler_output"]} if backend == "transformers" else None
    layer = "pooler_output" if model else "avgpool"
    _images(tmp_path / "images", 6)
    log = tmp_path / "decoded.txt"
    _logging_loads(log, monkeypatch)
    import ducho.runner as runner

    original_build = runner.build_extractor
    waited: list[bool] = []

    def build_after_a_decode(*args):
        deadline = time.monotonic() + 20
        while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        waited.append(log.exists() and bool(log.read_text()))
        return original_build(*args)

    monkeypatch.setattr(runner, "build_extractor", build_after_a_decode)
    first = run(_config(tmp_path, model=model), progress=False)
    assert waited == [True] and first.jobs[0].extracted == 6 and len(log.read_text().splitlines()) == 6
    vectors = _vectors(tmp_path / "out", layer)
    # the same files as decoding after the build (a second output folder: not fresh for the first one)
    monkeypatch.setattr(runner, "build_extractor", original_build)
    config = _config(tmp_path, model=model)  # the same batches
    config["visual"]["items"]["output_path"] = "out2"
    config["workers"] = 0
    assert run(config, progress=False).jobs[0].extracted == 6
    again = _vectors(tmp_path / "out2", layer)
    assert vectors.keys() == again.keys() and len(vectors) == 6
    assert all(np.array_equal(vectors[name], again[name]) for name in vectors)


def test_no_early_decoding_when_output_exists_or_the_loader_differs(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed job plans with its writers (done chunks are not decoded); an early loader that turns out not to be
    the model's is dropped and the records are decoded again with the model's own."""
    from ducho.backends.torch_vision import TorchVision
    from ducho.preprocess.image import ImagePipeline

    _images(tmp_path / "images", 6)
    log = tmp_path / "decoded.txt"
    _logging_loads(log, monkeypatch)
    monkeypatch.setattr(TorchVision, "loader_for", staticmethod(lambda spec: ImagePipeline(mean=None, std=None)))
    assert run(_config(tmp_path), progress=False).jobs[0].extracted == 6
    assert len(log.read_text().splitlines()) > 6  # decoded early, then again with the model's own loader
    vectors = _vectors(tmp_path / "out")
    monkeypatch.undo()
    config = _config(tmp_path)
    config["visual"]["items"]["output_path"] = "plain"
    assert _vectors(tmp_path / "plain") == {} and run(config, progress=False).jobs[0].extracted == 6
    plain = _vectors(tmp_path / "plain")  # without an early loader: the model's own preprocessing
    assert len(vectors) == 6 and all(np.array_equal(vectors[name], plain[name]) for name in plain)
    _logging_loads(log, monkeypatch)
    folder = next((tmp_path / "out").rglob("avgpool"))
    log.unlink()
    (folder / "00.npy").unlink()  # as a run interrupted before writing it
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"status": "complete"', '"status": "running"'))
    monkeypatch.setattr("ducho.shards.SHARD", 2)  # resumed by chunks of 2: only the first is redone
    result = run(_config(tmp_path, batch_size=2), progress=False).jobs[0]
    assert (result.extracted, result.resumed) == (2, 4)
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == ["00", "01"]
    assert np.array_equal(np.load(folder / "00.npy"), vectors["00.npy"])


def test_one_pool_of_workers_serves_every_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _images(tmp_path / "images", 10)
    log = tmp_path / "decoded.txt"
    _logging_loads(log, monkeypatch)
    monkeypatch.setattr("ducho.shards.SHARD", 4)
    monkeypatch.setattr("ducho.runner.plan_decoding", lambda *args: Decoding(2, 19))
    assert run(_config(tmp_path, batch_size=2), progress=False).jobs[0].extracted == 10
    pids = {line.split()[1] for line in log.read_text().splitlines()}
    assert len(pids) == 2  # 3 chunks, one pair of workers


def _tensor_or_failure(payload: int) -> object:
    import torch

    if payload % 3 == 1:
        raise ValueError(f"bad {payload}")
    return torch.full((2, 3) if payload != 5 else (4,), float(payload))  # 5: another shape


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_stream_keeps_every_record_in_place(workers: int) -> None:
    """Events pass through in order; a batch's records come back in order, tensors (stacked per piece by the
    workers) and failures alike, whatever the shapes."""
    events = [("start",), Batch([0, 1, 2, 3]), ("between",), Batch([4, 5, 6, 7, 8]), Batch([9]), ("end",)]
    stream = loading.DecodeStream(_tensor_or_failure, events, Decoding(workers, 0))
    out = list(stream)
    assert [event for event, _ in out] == events
    assert [loaded for event, loaded in out if not isinstance(event, Batch)] == [None] * 3
    for event, loaded in out:
        if isinstance(event, Batch):
            assert len(loaded) == len(event.payloads)
            for payload, item in zip(event.payloads, loaded):
                if payload % 3 == 1:
                    assert item == loading.Failed(f"ValueError: bad {payload}")
                else:
                    assert item.shape == ((4,) if payload == 5 else (2, 3)) and float(item.max()) == payload


class Batch:
    def __init__(self, payloads: list[int]) -> None:
        self.payloads = payloads

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Batch) and other.payloads == self.payloads


def _crashes_on_seven(payload: int) -> object:
    import torch

    if payload == 7:
        os.kill(os.getpid(), signal.SIGSEGV)  # a decoder crashing on one file takes its whole process down
    return torch.full((2,), float(payload))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_crashing_record_costs_only_itself(workers: int) -> None:
    events = [Batch(list(range(start, start + 4))) for start in range(0, 16, 4)]
    out = list(loading.DecodeStream(_crashes_on_seven, events, Decoding(workers, 0)))
    assert [event for event, _ in out] == events
    loaded = [item for _, items in out for item in items]
    assert isinstance(loaded[7], loading.Failed) and "crashed its worker process" in loaded[7].reason
    assert [float(item[0]) for n, item in enumerate(loaded) if n != 7] == [n for n in range(16) if n != 7]
