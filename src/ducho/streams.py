"""Background threads that keep the model busy: a bounded prefetcher and a write queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def prefetch(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Iterate `items` in a background thread, at most `depth` ahead; its exceptions surface here."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((_DONE, None))
        except BaseException as error:  # handed to the consumer
            buffer.put((_DONE, error))

    thread = threading.Thread(target=produce, name="ducho-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()


class WriteQueue:
    """Runs write tasks in order on one background thread, so the model never waits for the disk."""

    def __init__(self, depth: int = 16) -> None:
        self.tasks: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="ducho-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None:
                return
            if self.error is None:
                try:
                    task()
                except BaseException as error:
                    self.error = error

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        if self.error is not None:
            raise self.error
        self.tasks.put(lambda: function(*args))

    def close(self) -> None:
        """Wait for every submitted write; re-raise the first error."""
        self.tasks.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
