"""The Ray executor (`executor: ray`): the same shards and batches as the local executor, run on a Ray cluster with
Ray Data: a dataset of planned batches -> decoding as CPU tasks (`map_batches`, images and audio) -> the model as an
actor pool (`map_batches` with `ActorPoolStrategy`, each actor builds the model once) -> the vectors stream back to
the driver, whose writers write each shard when its last batch arrives (so resume works by shard, as locally).
Ray restarts a killed actor or task and retries its batch (`max_restarts`/`max_task_retries` -1, Ray Data's
defaults for actor pools); records that fail are skipped and listed exactly as locally."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .backends.registry import build_extractor
from .config.schema import Config, RaySettings
from .device import resolve_device
from .errors import ConfigError
from .loading import decode_alone
from .plan import Job
from .runner import JobOutputs, JobResult, fit
from .shards import Batch, Extracted, batches, decode, extract, loaded, prepare, shard_records
from .sources import Source

log = logging.getLogger("ducho")

# the environment every Ray worker needs as the driver has it (offline hubs, quiet tokenizers)
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM",
                 "TF_CPP_MIN_LOG_LEVEL", "HF_HOME", "TORCH_HOME", "KERAS_HOME")


@dataclass(frozen=True)
class Sizing:
    """The actor pool and the decoding tasks of a job, from the settings and the cluster's resources."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    actors_per_node: int  # without GPUs an actor's torch threads share its node's cores with the others there
    decode_cpus: float
    decode_tasks: int  # the cap on decoding tasks at once: what the CPUs hold, and never the actor count (see below)

    def capped(self, batches: int) -> Sizing:
        """No more actors than batches to run (an idle actor builds its model for nothing)."""
        actors = min(self.actors, max(1, batches))
        return replace(self, actors=actors, decode_tasks=self.decode_tasks + (self.decode_tasks == actors))


def plan_sizing(settings: RaySettings, nodes: list[dict[str, float]], decodes: bool) -> Sizing:
    """Default: one actor per GPU with GPUs; without, one actor per node, holding the node's CPUs less the decoding
    tasks' (at least half of them), its torch threads filling the node's cores as a local run's do (decoding runs at
    nice 19, as locally), so that it computes the same bits."""
    gpus = sum(node.get("GPU", 0) for node in nodes)
    cpus_total = sum(node.get("CPU", 0) for node in nodes)
    node_cpus = min((node.get("CPU", 0) for node in nodes), default=1) or 1
    if gpus and settings.gpus_per_actor != 0:
        per_gpu = settings.gpus_per_actor or 1
        cpus = settings.cpus_per_actor or 1
        actors = settings.actors or max(1, int(gpus // per_gpu))
        return Sizing(actors, per_gpu, cpus, 0, settings.decode_cpus,
                      _decode_tasks(cpus_total - cpus * actors, settings.decode_cpus, actors))
    actors = settings.actors or len(nodes)
    per_node = max(1, round(actors / max(1, len(nodes))))
    share = node_cpus / per_node
    if settings.cpus_per_actor:
        cpus = settings.cpus_per_actor
    elif decodes:
        cpus = max(share - settings.decode_cpus, share / 2)
    else:
        cpus = share
    decode_cpus = min(settings.decode_cpus, max(node_cpus - cpus * per_node, 0.25))
    return Sizing(actors, 0.0, cpus, per_node, decode_cpus,
                  _decode_tasks(cpus_total - cpus * actors, decode_cpus, actors))


def _decode_tasks(free_cpus: float, decode_cpus: float, actors: int) -> int:
    """As many decoding tasks as the CPUs the actors leave can run, but never exactly `actors`: Ray Data fuses a task
    pool into the actor pool after it when their sizes are equal, and the files would then decode inside the actor,
    before each forward instead of beside it (ResNet-50 on 2 CPUs: 0.69 of the local executor, fused)."""
    tasks = max(1, int(free_cpus / decode_cpus)) if decode_cpus > 0 else actors + 1
    return tasks + 1 if tasks == actors else tasks


class RayExecutor:
    """Connects to (or starts) the cluster once per run; `run_job` runs one job on it."""

    def __init__(self, config: Config) -> None:
        import ray

        self.settings = config.ray
        self.config = config
        address = self.settings.address
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        started = time.perf_counter()
        if address == "local":
            # workers of a cluster started here inherit this environment (a runtime_env would cost a start-up)
            # address "local": a new cluster even where another one runs on this machine (ray.init without an
            # address would join the one /tmp/ray/ray_current_cluster names, and refuse num_cpus)
            ray.init(address="local", num_cpus=self.settings.num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        else:
            _check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                         runtime_env={"env_vars": env})
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise ConfigError(f"ray.address {address!r}: cannot connect to a Ray cluster there ({error}); "
                                  "accepted: local, auto (a cluster started with `ray start`), HOST:PORT, "
                                  "ray://HOST:PORT") from error
        self.startup_seconds = time.perf_counter() - started
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows one bar of records
        context.print_on_execution_start = False
        # every model actor up before work is handed out (decoding waits too), or not; set either way: the context
        # outlives this run in the process
        context.wait_for_min_actors_s = 600 if self.settings.wait_for_actors else -1
        self.nodes = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
        log.info("ray: %s, %d node(s), %s CPU, %s GPU, connected in %.1f s", address, len(self.nodes),
                 sum(n.get("CPU", 0) for n in self.nodes), sum(n.get("GPU", 0) for n in self.nodes),
                 self.startup_seconds)

    def close(self) -> None:
        import ray

        ray.shutdown()

    def run_job(self, job: Job, source: Source, scan: Any, device: str, config: Config, progress: bool) -> JobResult:
        import ray
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        started = time.perf_counter()
        log.info("%s: %s (%s) on %s -> %s, on Ray", job.key, job.spec.model_name, job.backend, job.input_path,
                 job.output_dir)
        # the driver builds the model on its CPU too: for the layers, the loader, the sort key, the manifest, a fit
        extractor = build_extractor(job.modality, job.backend, job.spec, "cpu")
        fit(extractor, source, scan, job)
        fitted = pickle.dumps(extractor) if hasattr(extractor, "fit") else None
        outputs = JobOutputs(job, extractor, source, scan, config, f"ray ({config.device})", started)
        work, sizes, left = [], {}, Counter()
        for index, records, skips in shard_records(source, scan, job.spec):
            for skip in skips:
                outputs.report(skip)
            if not records:
                continue
            todo = outputs.plan_shard(index, records)
            outputs.result.resumed += len(records) - len(todo or ())
            if todo is None:
                continue
            if not todo:  # every record's vector taken from the previous output (incremental)
                outputs.end_shard(index, len(records))
                continue
            sizes[index] = len(records)
            for batch in batches(index, records, job.spec.batch_size, extractor.sort_key, todo):
                work.append({"batch": pickle.dumps(batch)})
                left[index] += 1
        sizing = plan_sizing(self.settings, self.nodes, extractor.loader is not None).capped(len(work))
        log.info("%s: %d batch(es) of %d shard(s) to run (%d records done), %d actor(s) x %s CPU %s GPU, decoding "
                 "tasks %s CPU", job.key, len(work), len(sizes), outputs.result.resumed, sizing.actors,
                 sizing.cpus_per_actor, sizing.gpus_per_actor, sizing.decode_cpus)
        nodes: Counter[str] = Counter()
        if work:
            dataset = ray.data.from_items(work, override_num_blocks=min(len(work), 1000))
            if extractor.loader is not None:
                dataset = dataset.map_batches(_decode_rows, batch_size=1, fn_kwargs={
                                                  "loader": extractor.loader, "run": uuid.uuid4().hex},
                                              compute=TaskPoolStrategy(size=sizing.decode_tasks),
                                              num_cpus=sizing.decode_cpus)
            dataset = dataset.map_batches(
                _ModelActor, batch_size=1, compute=ActorPoolStrategy(  # two batches per actor: one prepares
                    size=sizing.actors, max_tasks_in_flight_per_actor=2, enable_true_multi_threading=True),
                fn_constructor_kwargs={"job": job, "device": config.device, "per_node": sizing.actors_per_node,
                                       "fitted": fitted},
                num_cpus=sizing.cpus_per_actor, num_gpus=sizing.gpus_per_actor or None)
            bar = tqdm(total=scan.kept - outputs.result.resumed, desc=job.key, unit="rec", disable=not progress,
                       dynamic_ncols=True)
            try:
                for row in dataset.iter_rows():
                    extracted, node, count = pickle.loads(row["result"])
                    outputs.add(extracted)
                    nodes[node] += len(extracted.keys)
                    bar.update(count)
                    left[extracted.shard] -= 1
                    if left[extracted.shard] == 0:
                        outputs.end_shard(extracted.shard, sizes[extracted.shard])
            finally:
                bar.close()
        outputs.extra["ray"] = {"address": self.settings.address, "actors": sizing.actors,
                                "extracted_per_node": dict(nodes)}
        log.info("%s: records extracted per Ray node: %s", job.key, dict(nodes) or "none (all done)")
        return outputs.close()


def _check_reachable(address: str) -> None:
    """A HOST:PORT address that does not answer fails now, naming it (Ray would retry for a minute)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray.address {address!r} is not accepted; accepted: local, auto, HOST:PORT, "
                          "ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConfigError(f"ray.address {address!r}: nothing answers at {host}:{port} ({error}); start the head "
                          "with `ray start --head` or fix the address") from error


def _decode_rows(rows: dict[str, Any], loader: Any, run: str) -> dict[str, Any]:
    """A Ray task: load the files of each planned batch (at nice 19, so the model's threads keep the cores).

    Ray Data retries a task whose process died, without end: a decoder that crashes on a file would crash every
    retry. So a batch is marked (a file in this node's temporary folder) while it decodes; a retry that finds the
    mark left by a dead attempt decodes each file in a child process of its own, and the file that crashes it is
    skipped and listed (`loading.decode_alone`), as the local executor does."""
    _lowest_priority()
    out = []
    for blob in rows["batch"]:
        batch: Batch = pickle.loads(blob)
        mark = Path(tempfile.gettempdir()) / "ducho-decoding" / f"{run}-{batch.shard}-{batch.positions[0]}"
        if mark.exists():
            items = decode_alone(loader, batch.payloads, 19, "on a Ray node")
        else:
            mark.parent.mkdir(exist_ok=True)
            mark.touch()
            items = decode(loader, batch)
        mark.unlink(missing_ok=True)
        out.append(pickle.dumps((batch, items)))
    return {"decoded": out}


def _lowest_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except (AttributeError, OSError):
        pass


class _ModelActor:
    """One model per actor, built once; each call runs planned batches through the shard runner's `extract`."""

    def __init__(self, job: Job, device: str, per_node: int, fitted: bytes | None) -> None:
        import ray
        import torch

        if per_node:  # Ray set OMP_NUM_THREADS to the actor's logical CPUs; the node's cores are what a local run uses
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
        self.job = job
        device = resolve_device("auto" if device.startswith("cuda") else device, fallback_to_cpu=True)
        self.extractor = pickle.loads(fitted) if fitted else build_extractor(job.modality, job.backend, job.spec,
                                                                              device)
        self.node = ray.get_runtime_context().get_node_id()
        self.forwarding = threading.Lock()  # one forward at a time; the other batch prepares (tokenizes) meanwhile

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        out = []
        for blob in rows["decoded"] if "decoded" in rows else rows["batch"]:
            if "decoded" in rows:
                batch, items = pickle.loads(blob)
            else:
                batch = pickle.loads(blob)
                items = decode(None, batch)
            good, good_items, skips = loaded(batch, items)
            if good.records:
                prepared = prepare(self.extractor, good_items)
                with self.forwarding:
                    extracted = extract(self.extractor, self.job.spec.normalize, good, good_items, prepared)
            else:
                extracted = Extracted(batch.shard)
            extracted.skips = [*skips, *extracted.skips]
            out.append(pickle.dumps((extracted, self.node, len(batch.records))))
        return {"result": out}
