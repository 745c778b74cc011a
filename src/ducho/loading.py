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


def auto_workers(requested: int | None) -> int:
    """Worker processes: the user's number, else one per spare core (at most 4)."""
    if requested is not None:
        return requested
    return max(1, min(4, (os.cpu_count() or 2) - 1))


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


def _lower_priority(worker_id: int) -> None:
    """Decoding yields the CPU to the model: on a busy machine it fills the model's idle gaps instead."""
    try:
        os.nice(5)
    except OSError:
        pass


def load_batches(loader: Callable[[Any], Any] | None, payloads: Sequence[Any], batches: list[list[int]],
                 workers: int) -> Iterator[list[Any]]:
    """Yield, for each batch of positions, the loaded payloads in that order (a `Failed` for a bad one).

    No loader: the payloads themselves (texts are tokenised per batch by the extractor). workers=0: loaded in
    this thread. Otherwise a torch DataLoader with `workers` processes keeps a few batches ready ahead.
    """
    if loader is None:
        yield from ([payloads[i] for i in batch] for batch in batches)
        return
    if workers == 0 or len(batches) == 0:
        yield from ([load_one(loader, payloads[i]) for i in batch] for batch in batches)
        return
    from torch.utils.data import DataLoader

    context = "fork" if sys.platform.startswith("linux") else None
    yield from DataLoader(_Payloads(loader, payloads), batch_sampler=batches, num_workers=min(workers, len(batches)),
                          collate_fn=_as_list, prefetch_factor=2, multiprocessing_context=context,
                          worker_init_fn=_lower_priority)
