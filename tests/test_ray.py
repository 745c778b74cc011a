"""`executor: ray` on a 2-node Ray cluster made on this machine (`ray.cluster_utils.Cluster`): the same vectors as
the local executor for a text, an image and an audio job, work on both nodes, resume after the driver is killed,
a model actor killed mid-run, a node removed mid-run, and an unreachable address refused before any work."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import WORDS, write_tsv
from ducho import run
from ducho.errors import ConfigError


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A head with 2 CPUs and a worker node with 1: two model actors, one per node."""
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    worker = made.add_node(num_cpus=1)
    made.wait_for_nodes()
    made.worker = worker  # type: ignore[attr-defined]
    yield made
    made.shutdown()


def texts(root: Path, count: int) -> None:
    rng = random.Random(count)
    rows = [[f"t{n}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30)))] for n in range(count)]
    write_tsv(root / "texts.tsv", ["id", "text"], rows)


def media(root: Path) -> None:
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True)
    for n in range(8):
        Image.fromarray(rng.integers(0, 255, (40 + 9 * n, 50, 3), dtype=np.uint8)).save(root / "images" / f"p{n}.jpg")
    (root / "images" / "broken.jpg").write_bytes(b"not an image")  # skipped and listed, as locally
    (root / "clips").mkdir()
    for n in range(4):
        sf.write(root / "clips" / f"c{n}.wav", rng.normal(0, 0.1, 8000 + 3000 * n).astype(np.float32), 16000)


def config(root: Path, out: str, tiny_bert: Path, tiny_w2v2: Path | None = None, **top: object) -> dict:
    sections: dict = {"textual": {"items": {"input_path": "texts.tsv", "output_path": f"{out}/text", "model": [
        {"model_name": str(tiny_bert), "backend": "transformers", "batch_size": 4}]}}}
    if tiny_w2v2 is not None:
        sections["visual"] = {"items": {"input_path": "images", "output_path": f"{out}/images", "model": [
            {"model_name": "resnet18", "weights": "none", "output_layers": ["avgpool", "fc"], "batch_size": 2}]}}
        sections["audio"] = {"items": {"input_path": "clips", "output_path": f"{out}/audio", "model": [
            {"model_name": str(tiny_w2v2), "backend": "transformers", "batch_size": 1}]}}
    return {"dataset_path": str(root), "device": "cpu", "workers": 0, **sections, **top}


def files(folder: Path) -> dict[str, bytes]:
    """Every output file but the manifests and logs (they name times and executors)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def on_ray(address: str) -> dict:
    return {"executor": "ray", "ray": {"address": address, "wait_for_actors": True}}


def test_a_cluster_started_by_the_run_and_strict_mode(tmp_path: Path, tiny_bert: Path) -> None:
    """address local (the default) starts a 2-CPU cluster inside the run (a new one, even where
    /tmp/ray/ray_current_cluster names another, which ray.init without an address would join); in strict mode a bad
    image stops the job (listed in failures.tsv otherwise, as the next test shows)."""
    from ducho.errors import StrictModeError

    texts(tmp_path, 3)
    media(tmp_path)
    cfg = config(tmp_path, "out", tiny_bert, Path("unused"), executor="ray", ray={"num_cpus": 2})
    del cfg["textual"], cfg["audio"]
    with pytest.raises(StrictModeError, match="broken"):  # the bad file's failure came back from the cluster
        run({**cfg, "strict": True}, progress=False)


def test_text_image_audio_equal_the_local_executor_and_run_on_both_nodes(
        cluster: object, tmp_path: Path, tiny_bert: Path, tiny_w2v2: Path) -> None:
    texts(tmp_path, 60)
    media(tmp_path)
    local = run(config(tmp_path, "local", tiny_bert, tiny_w2v2), progress=False)
    ray_run = run(config(tmp_path, "ray", tiny_bert, tiny_w2v2, **on_ray(cluster.address)), progress=False)
    assert [job.extracted for job in ray_run.jobs] == [job.extracted for job in local.jobs] == [60, 8, 4]
    expected = files(tmp_path / "local")
    assert len(expected) > 60 + 16 + 4 and files(tmp_path / "ray") == expected  # vectors and failures.tsv
    assert "broken" in (tmp_path / "ray/images/torch/resnet18/failures.tsv").read_text()
    import json

    nodes = set()
    for job in ray_run.jobs:
        manifest = json.loads(next(job.output_dir.glob("*/manifest.json")).read_text())
        assert manifest["ray"]["actors"] == 2 and sum(manifest["ray"]["extracted_per_node"].values()) == job.extracted
        nodes |= set(manifest["ray"]["extracted_per_node"])
    assert len(nodes) == 2  # work ran on both nodes

    # an incremental run on Ray: the changed input's added and changed texts only, the same files as locally
    lines = (tmp_path / "texts.tsv").read_text().splitlines()
    lines = [lines[0], "n1\tan added text", *lines[2:20], lines[20] + " changed", *lines[21:], "n2\tanother one"]
    (tmp_path / "texts.tsv").write_text("\n".join(lines) + "\n")
    local = run(config(tmp_path, "local", tiny_bert), progress=False)
    ray_run = run(config(tmp_path, "ray", tiny_bert, **on_ray(cluster.address)), progress=False)
    assert [job.extracted for job in ray_run.jobs] == [job.extracted for job in local.jobs] == [3]
    assert files(tmp_path / "ray") == files(tmp_path / "local")


SHARD, TEXTS = 20, 400  # 20 shards
SMALL_SHARDS = (f"import ducho.shards as s, sys; s.SHARD = {SHARD}; from ducho.cli import main; "
                "sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> tuple[Path, dict[str, bytes]]:
    """400 texts and the local executor's Parquet output of them in shards of 20, for the fault tests."""
    import ducho.shards

    root = tmp_path_factory.mktemp("ray-faults")
    texts(root, TEXTS)
    saved, ducho.shards.SHARD = ducho.shards.SHARD, SHARD
    try:
        run(config(root, "local", tiny_bert, format="parquet"), progress=False)
    finally:
        ducho.shards.SHARD = saved
    return root, files(root / "local")


def parts(root: Path, out: str) -> int:
    return len(list((root / out / "text/transformers/tiny-bert/last_hidden_state/shards").glob("part-*.parquet")))


def parquet_job(root: Path, out: str, tiny_bert: Path, **top: object) -> Path:
    import yaml

    path = root / f"{out}.yml"
    path.write_text(yaml.safe_dump(config(root, out, tiny_bert, format="parquet", **top)))
    return path


def when(condition: Callable[[], bool], action: Callable[[], None]) -> threading.Thread:
    """A thread that runs `action` once `condition` holds (or after 300 s)."""
    def work() -> None:
        deadline = time.monotonic() + 300
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        action()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def model_actors() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"]) if "_ModelActor" in " ".join(p.info["cmdline"] or [])]


def test_a_killed_driver_resumes_by_shard_and_a_killed_actor_is_restarted(
        cluster: object, shared: tuple[Path, dict[str, bytes]], tiny_bert: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the driver mid-run, then the same run again, during which a model actor is killed: only the
    missing shards are computed, and the files equal the local executor's."""
    root, expected = shared
    cfg = parquet_job(root, "killed", tiny_bert, **on_ray(cluster.address))
    driver = subprocess.Popen([sys.executable, "-c", SMALL_SHARDS, "run", str(cfg), "--no-progress"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while parts(root, "killed") < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = parts(root, "killed")
    assert 2 <= written < 15, written  # killed mid-run
    killed: list[tuple[int, int]] = []

    def kill() -> None:
        for pid in model_actors()[:1]:
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, parts(root, "killed")))

    monkeypatch.setattr("ducho.shards.SHARD", SHARD)
    thread = when(lambda: parts(root, "killed") >= written + 2, kill)
    again = run(config(root, "killed", tiny_bert, format="parquet", **on_ray(cluster.address)), progress=False)
    thread.join()
    assert len(killed) == 1 and killed[0][1] < 20  # an actor died while shards were left
    assert again.jobs[0].resumed >= SHARD * written and again.jobs[0].extracted == TEXTS - again.jobs[0].resumed
    assert files(root / "killed") == expected


def test_a_node_leaving_mid_run_does_not_fail_the_job(
        cluster: object, shared: tuple[Path, dict[str, bytes]], tiny_bert: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker node of the 2-node cluster leaves mid-run (the last test on that cluster)."""
    root, expected = shared
    monkeypatch.setattr("ducho.shards.SHARD", SHARD)
    removed: list[int] = []

    def remove() -> None:
        removed.append(parts(root, "node"))
        cluster.remove_node(cluster.worker)

    thread = when(lambda: parts(root, "node") >= 2, remove)
    result = run(config(root, "node", tiny_bert, format="parquet", **on_ray(cluster.address)), progress=False)
    thread.join()
    assert len(removed) == 1 and removed[0] < 20  # the node left while shards were left
    assert result.jobs[0].extracted == TEXTS and files(root / "node") == expected


def test_an_unreachable_address_fails_before_any_work_naming_it(tmp_path: Path, tiny_bert: Path) -> None:
    texts(tmp_path, 3)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"ray.address '127.0.0.1:9': nothing answers"):
        run(config(tmp_path, "out", tiny_bert, **on_ray("127.0.0.1:9")), progress=False)
    assert time.monotonic() - started < 30 and not (tmp_path / "out").exists()


def test_actor_sizing_defaults() -> None:
    """One actor per GPU with GPUs; without, one per node holding its CPUs less the decoding tasks' (at least half)."""
    from ducho.config.schema import RaySettings
    from ducho.ray_executor import plan_sizing

    gpus = plan_sizing(RaySettings(), [{"CPU": 16, "GPU": 4}, {"CPU": 16, "GPU": 4}], decodes=True)
    assert (gpus.actors, gpus.gpus_per_actor, gpus.cpus_per_actor) == (8, 1, 1)
    cpus = plan_sizing(RaySettings(), [{"CPU": 8}, {"CPU": 8}], decodes=True)
    assert (cpus.actors, cpus.gpus_per_actor, cpus.cpus_per_actor, cpus.decode_cpus) == (2, 0, 7, 1)
    texts_only = plan_sizing(RaySettings(), [{"CPU": 2}], decodes=False)
    assert (texts_only.actors, texts_only.cpus_per_actor, texts_only.actors_per_node) == (1, 2, 1)
    small = plan_sizing(RaySettings(), [{"CPU": 1}, {"CPU": 1}], decodes=True)
    assert (small.actors, small.cpus_per_actor, small.decode_cpus) == (2, 0.5, 0.5)
    asked = plan_sizing(RaySettings(actors=4, cpus_per_actor=2), [{"CPU": 8}, {"CPU": 8}], decodes=True)
    assert (asked.actors, asked.cpus_per_actor, asked.actors_per_node) == (4, 2, 2)
    # decoding tasks: what the CPUs left hold, never the actor count (Ray Data would fuse decoding into the actors)
    assert (gpus.decode_tasks, cpus.decode_tasks, small.decode_tasks, asked.decode_tasks) == (24, 2 + 1, 3, 8)
    few = cpus.capped(1)  # one batch to run: one actor
    assert (few.actors, few.cpus_per_actor, few.decode_tasks) == (1, 7, 3)
    crowded = plan_sizing(RaySettings(), [{"CPU": 9, "GPU": 8}], decodes=True)  # one CPU left for decoding
    assert (crowded.decode_tasks, crowded.capped(1).actors, crowded.capped(1).decode_tasks) == (1, 1, 2)


def test_a_file_that_crashes_its_decoder_costs_only_itself(cluster: object) -> None:
    """Ray retries a task whose process died, without end; the retry of a batch that crashed its decoding task
    decodes each file in a process of its own, so only the file that crashes it is lost (as locally)."""
    import pickle

    import ray

    from ducho.ids import RecordKey
    from ducho.loading import Failed
    from ducho.ray_executor import _decode_rows
    from ducho.shards import Batch
    from ducho.sources.base import Record

    def crashes_on_seven(payload: int) -> int:
        if payload == 7:
            os.kill(os.getpid(), signal.SIGSEGV)  # a decoder crashing on one file takes its whole process down
        return payload * 10

    work = [{"batch": pickle.dumps(Batch(0, [Record(RecordKey(f"r{n}"), f"f{n}", n) for n in range(s, s + 4)],
                                         list(range(s, s + 4))))} for s in (0, 4, 8)]
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        rows = ray.data.from_items(work, override_num_blocks=3).map_batches(
            _decode_rows, batch_size=1, fn_kwargs={"loader": crashes_on_seven, "run": "crash-test"}).take_all()
    finally:
        ray.shutdown()
    items = {}
    for row in rows:
        batch, decoded = pickle.loads(row["decoded"])
        items.update(zip(batch.payloads, decoded))
    assert sorted(items) == list(range(12))
    assert all(items[n] == n * 10 for n in range(12) if n != 7)
    assert isinstance(items[7], Failed) and "crashed its worker process" in items[7].reason
