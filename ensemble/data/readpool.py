"""Reading many files with a small thread pool: in order, a bounded number in flight at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from ensemble.machine import usable_cores

MAX_READERS = 4

T = TypeVar("T")


def readers() -> int:
    """Threads that decode files: a few, never more than the usable cores."""
    return max(1, min(MAX_READERS, usable_cores()))


def read_chunks(read: Callable[[Path], T], files: Sequence[Path], chunk: int = 256) -> Iterator[list[T]]:
    """`read` each file in order, a chunk of tasks at a time (a pool's `map` would queue them all at
    once), yielding each chunk's results."""
    with ThreadPoolExecutor(readers()) as pool:
        for start in range(0, len(files), chunk):
            yield list(pool.map(read, files[start : start + chunk]))


def read_each(read: Callable[[Path], T], files: Sequence[Path]) -> Iterator[T]:
    """`read` each file in order, as `read_chunks` schedules them, one result at a time."""
    for chunk in read_chunks(read, files):
        yield from chunk


def read_batches(
    files: Sequence[Path], read: Callable[[Path], np.ndarray], batch_size: int
) -> Iterator[np.ndarray]:
    """Decode `files` with a small thread pool, one batch ahead of the consumer, and stack each batch."""
    if not files:
        return
    with ThreadPoolExecutor(readers()) as pool:
        pending = None
        for start in range(0, len(files), batch_size):
            futures = [pool.submit(read, path) for path in files[start : start + batch_size]]
            if pending is not None:
                yield _stack(pending)
            pending = futures
        yield _stack(pending)


def _stack(futures) -> np.ndarray:
    try:
        return np.stack([future.result() for future in futures])
    finally:
        for future in futures:
            future.cancel()
