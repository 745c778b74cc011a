"""Decode and preprocess records (image and audio files) in worker processes while the model runs.

An extractor's `loader` turns one payload (a file path) into a model-ready array; it must be picklable.
A record whose loader raises is returned as a `Failed` with the reason, so one bad file costs only itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_CONTEXT = "fork" if sys.platform.startswith("linux") else None


@dataclass(frozen=True, slots=True)
class Failed:
    """A record whose decoding failed, and why."""

    reason: str


def reason_of(error: BaseException) -> str:
    """One line for failures.tsv: the error type and its first line."""
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def load_one(loader: Callable[[Any], Any], payload: Any) -> Any:
    try:
        return loader(payload)
    except Exception as error:  # any decoding problem is the record's, not the run's
        return Failed(reason_of(error))


@dataclass(frozen=True, slots=True)
class Decoding:
    """How records are decoded: `workers` processes (0: in a thread) at niceness `nice`."""

    workers: int
    nice: int


def plan_decoding(requested: int | None, device: str, cores: int | None = None,
                  model_threads: int | None = None) -> Decoding:
    """Worker processes and their priority.

    On a GPU the workers decode beside the forward, which they rarely keep up with: auto is every core but one (at
    most 32). On a CPU, auto is one worker per core the model's threads leave spare (at least 1, at most 4); where
    the workers and the model's threads together outnumber the cores, the workers run at the lowest priority (nice
    19), so that decoding takes a core only when the forward leaves it idle, else at nice 5. Measured on 2 cores
    (ResNet-50, 256 JPEGs, median of 4 rounds against the bare forward): nice 19, 0.89-0.91 with 1 or 2
    workers; nice 5, 0.85; decoding only between forwards, 0.86. wav2vec2 audio did no better with 2 workers
    than with 1.
    """
    cores = cores or os.cpu_count() or 2
    if device != "cpu":
        return Decoding(requested if requested is not None else max(1, min(32, cores - 1)), 5)
    if model_threads is None:
        import torch

        model_threads = torch.get_num_threads()
    workers = requested if requested is not None else max(1, min(4, cores - model_threads))
    return Decoding(workers, 19 if model_threads + max(workers, 1) > cores else 5)


class _Payloads:
    """A map-style dataset over one chunk's payloads (what the DataLoader sends to its workers)."""

    def __init__(self, loader: Callable[[Any], Any], payloads: Sequence[Any]) -> None:
        self.loader = loader
        self.payloads = payloads

    def __len__(self) -> int:
        return len(self.payloads)

    def __getitem__(self, index: int) -> Any:
        return load_one(self.loader, self.payloads[index])


def _as_list(items: list[Any]) -> list[Any]:
    return items


class _LowerPriority:
    """A worker's start: decoding yields the CPU to the model and fills the model's idle gaps instead."""

    def __init__(self, nice: int) -> None:
        self.nice = nice

    def __call__(self, worker_id: int) -> None:
        try:
            os.nice(max(0, self.nice - os.nice(0)))
        except OSError:
            pass


def load_batches(loader: Callable[[Any], Any] | None, payloads: Sequence[Any], batches: list[list[int]],
                 decoding: Decoding) -> Iterator[list[Any]]:
    """Yield, for each batch of positions, the loaded payloads in that order (a `Failed` for a bad one).

    No loader: the payloads themselves (texts are tokenised per batch by the extractor). 0 workers: loaded in
    this thread. Otherwise a torch DataLoader with that many processes keeps a few batches ready ahead; each batch
    is cut into one piece per worker, so that every worker shares in every batch (the first one too).
    """
    if loader is None:
        yield from ([payloads[i] for i in batch] for batch in batches)
        return
    dataset = _Payloads(loader, payloads)
    if decoding.workers == 0 or len(batches) == 0:
        yield from ([dataset[i] for i in batch] for batch in batches)
        return
    from torch.utils.data import DataLoader

    size = -(-max(len(batch) for batch in batches) // decoding.workers)
    pieces = [batch[start:start + size] for batch in batches for start in range(0, len(batch), size)]
    loaded = iter(DataLoader(dataset, batch_sampler=pieces, num_workers=min(decoding.workers, len(pieces)),
                             collate_fn=_as_list, prefetch_factor=2, multiprocessing_context=_CONTEXT,
                             worker_init_fn=_LowerPriority(decoding.nice)))
    for batch in batches:
        items: list[Any] = []
        while len(items) < len(batch):
            items.extend(next(loaded))
        yield items
