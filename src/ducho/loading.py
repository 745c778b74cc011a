"""Decode and preprocess records (image and audio files) in worker processes while the model runs.

An extractor's `loader` turns one payload (a file path) into a model-ready array; it must be picklable.
A record whose loader raises is returned as a `Failed` with the reason, so one bad file costs only itself.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    (ResNet-50, 256 JPEGs, median of 4 rounds against the bare forward, before the pool started ahead of the
    build): nice 19, 0.89-0.91 with 1 or 2 workers; nice 5, 0.85; decoding only between forwards, 0.86. wav2vec2
    audio did no better with 2 workers than with 1.
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
    """A map-style dataset whose indices are the payloads themselves (what the DataLoader sends to its workers)."""

    def __init__(self, loader: Callable[[Any], Any]) -> None:
        self.loader = loader

    def __getitem__(self, payload: Any) -> Any:
        return load_one(self.loader, payload)


@dataclass(frozen=True, slots=True)
class _Packed:
    """A worker's piece with its tensors (or numpy arrays) of one shape stacked: one shared-memory transfer instead of
    one per record (18 ms against 6 ms to receive 32 images of 3x224x224 here). `others` holds the rest (failures) by
    position; `arrays`: the records were numpy arrays and are given back as such (views of the shared tensor)."""

    stacked: Any
    others: dict[int, Any]
    arrays: bool = False


def _pack(items: list[Any]) -> Any:
    """Runs in the worker, as the DataLoader's collate function."""
    import numpy as np
    import torch

    kind = torch.Tensor if any(isinstance(item, torch.Tensor) for item in items) else np.ndarray
    values = [item for item in items if isinstance(item, kind)]
    if len(values) < 2 or any(v.shape != values[0].shape or v.dtype != values[0].dtype for v in values):
        return items
    others = {n: item for n, item in enumerate(items) if not isinstance(item, kind)}
    if kind is np.ndarray:
        return _Packed(torch.from_numpy(np.stack(values)), others, arrays=True)
    return _Packed(torch.stack(values), others)


def _unpack(piece: Any) -> list[Any]:
    if not isinstance(piece, _Packed):
        return piece
    values = iter(piece.stacked.numpy() if piece.arrays else piece.stacked)
    return [piece.others[n] if n in piece.others else next(values)
            for n in range(len(piece.stacked) + len(piece.others))]


class _LowerPriority:
    """A worker's start: decoding yields the CPU to the model and fills the model's idle gaps instead."""

    def __init__(self, nice: int) -> None:
        self.nice = nice

    def __call__(self, worker_id: int) -> None:
        try:
            os.nice(max(0, self.nice - os.nice(0)))
        except OSError:
            pass


def _isolating_start(nice: int, loader: Callable[[Any], Any]) -> None:
    """The start of a process that decodes records which may crash it: a crash is reported as the record's failure,
    so the process prints no faulthandler dump (inherited from a parent that enabled it: pytest, PYTHONFAULTHANDLER).
    The DataLoader's workers need nothing: torch's own handler of fatal signals replaces faulthandler's there. The
    loader comes with the fork (not pickled), so any loader works, as in the DataLoader's workers."""
    global _INHERITED_LOADER
    faulthandler.disable()
    _LowerPriority(nice)(0)
    _INHERITED_LOADER = loader


_INHERITED_LOADER: Callable[[Any], Any] | None = None


def _load_inherited(payload: Any) -> Any:
    assert _INHERITED_LOADER is not None
    return load_one(_INHERITED_LOADER, payload)


def decode_alone(loader: Callable[[Any], Any], payloads: Sequence[Any], nice: int, crash: str) -> list[Any]:
    """Load each payload in a child process (one, replaced when it dies): a payload whose process dies is a
    `Failed` naming `crash`, so a decoder that crashes on one file costs only that file."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context(_CONTEXT)
    pool: ProcessPoolExecutor | None = None
    items: list[Any] = []
    try:
        for payload in payloads:
            pool = pool or ProcessPoolExecutor(1, mp_context=context, initializer=_isolating_start,
                                               initargs=(nice, loader))
            try:
                items.append(pool.submit(_load_inherited, payload).result())
            except BrokenProcessPool:
                items.append(Failed(f"decoding this file crashed its worker process ({crash})"))
                pool.shutdown(wait=True)
                pool = None
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return items


class DecodeStream:
    """A job's events in order, each batch (an event with `payloads`) given with its payloads loaded.

    The worker processes are forked once, when the stream is made (before the model is built where the loader is
    known by then, so that the first batches decode while the model loads), and serve every batch of the job. Each
    batch is cut into one piece per worker, so that every worker shares in every batch. `events` is advanced only
    when the workers take more work (a few pieces ahead of the model), in the thread that iterates the stream, or
    in this constructor for the first pieces. No loader: a batch comes with its payloads (texts are tokenised by the
    extractor); 0 workers: loaded in the thread that iterates.
    """

    def __init__(self, loader: Callable[[Any], Any] | None, events: Iterable[Any], decoding: Decoding) -> None:
        self.loader = loader
        self._events = iter(events)
        self._decoding = decoding
        self._pending: deque[tuple[Any, int]] = deque()  # events pulled by the workers' queue, and their pieces
        self._loaded: Iterator[Any] | None = None
        if loader is not None and decoding.workers > 0:
            self._start()

    def _start(self) -> None:
        """Fork the workers and hand them their first pieces. Done in a helper thread: a DataLoader made in the main
        thread installs a SIGCHLD handler that raises a dead worker's error wherever the main thread is (e.g. in
        the forward) instead of where its results are awaited."""
        from torch.utils.data import DataLoader

        loader = DataLoader(_Payloads(self.loader), batch_sampler=self._pieces(), num_workers=self._decoding.workers,
                            collate_fn=_pack, prefetch_factor=2, multiprocessing_context=_CONTEXT,
                            worker_init_fn=_LowerPriority(self._decoding.nice))
        started: list[Any] = []
        thread = threading.Thread(target=lambda: started.append(iter(loader)), name="ducho-decode-start")
        thread.start()
        thread.join()
        if not started:
            raise RuntimeError("the decoding workers could not be started")
        self._loaded = started[0]

    def _pieces(self) -> Iterator[list[Any]]:
        for event in self._events:
            payloads = getattr(event, "payloads", None)
            if payloads is None:
                self._pending.append((event, 0))
                continue
            size = max(1, -(-len(payloads) // self._decoding.workers))
            pieces = [list(payloads[start:start + size]) for start in range(0, len(payloads), size)]
            self._pending.append((event, len(pieces)))
            yield from pieces

    def __iter__(self) -> Iterator[tuple[Any, list[Any] | None]]:
        if self._loaded is None:
            for event in self._events:
                payloads = getattr(event, "payloads", None)
                if payloads is None or self.loader is None:
                    yield event, (None if payloads is None else list(payloads))
                else:
                    yield event, [load_one(self.loader, payload) for payload in payloads]
            return
        # Every result taken makes the DataLoader pull one more piece, which appends that piece's event (and any
        # event before it) here first: so once this is empty, `events` is exhausted.
        while self._pending:
            event, pieces = self._pending.popleft()
            if not hasattr(event, "payloads"):
                yield event, None
                continue
            try:
                items: list[Any] = []
                for _ in range(pieces):
                    items.extend(_unpack(next(self._loaded)))  # type: ignore[arg-type]
            except RuntimeError as error:
                if not any(death in str(error) for death in ("exited unexpectedly", "killed by signal")):
                    raise
                # a worker died (a decoder crashed on a file): the events in flight are decoded again, one record
                # per process, so that only the record that crashes it is lost; then a new pool goes on
                suspects = [event, *(queued for queued, _ in self._pending)]
                self._pending.clear()
                self.close()
                yield from self._isolated(suspects, reason_of(error))
                self._start()
                continue
            yield event, items

    def _isolated(self, events: list[Any], crash: str) -> Iterator[tuple[Any, list[Any] | None]]:
        """Decode each record of `events` in a process of its own; a record whose process dies is a `Failed`."""
        assert self.loader is not None
        for event in events:
            payloads = getattr(event, "payloads", None)
            yield event, None if payloads is None else decode_alone(self.loader, payloads, self._decoding.nice, crash)

    def close(self) -> None:
        """Stop the workers now (they also stop when the stream ends or is garbage collected)."""
        shutdown = getattr(self._loaded, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._loaded = None
