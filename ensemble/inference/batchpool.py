"""Batch parallelism on CPU: K worker threads each compute the fused scores of the next batch on
single-threaded sessions shared by all workers, and the results come back in batch order.

Independent single-thread runs do not synchronise per operator the way one session's intra-op
pool does, so on a CPU they keep every core busy (benchmarks/README.md, "Batch parallelism").
ONNX Runtime and OpenVINO release the GIL while they compute and a session takes concurrent runs.
Each worker owns its stage timings (and the scorer its fusion buffer per thread); decoding,
cleanup (Numba, not re-entrant) and writing stay with the caller, in the main thread.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ensemble.errors import EnsError
from ensemble.machine import physical_cores
from ensemble.members.session import CPU, requested_providers
from ensemble.timing import Timings

if TYPE_CHECKING:
    from ensemble.inference.options import PredictOptions

Batch = tuple[np.ndarray, np.ndarray]
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerLayout:
    """How a run spreads its batches: `workers` threads, `worker_batch` images each, `threads`
    intra-op threads per session (None: the physical cores), and a note when --workers was capped."""

    workers: int
    worker_batch: int
    threads: int | None
    note: str | None = None


def worker_layout(options: PredictOptions) -> WorkerLayout:
    """The worker layout of `options` (see `worker_count` and `session_threads`)."""
    if options.batch_size < 1:
        raise EnsError(f"--batch-size {options.batch_size} must be >= 1")
    workers, note = worker_count(options)
    return WorkerLayout(
        workers, worker_batch(options.batch_size, workers), session_threads(options, workers), note
    )


def worker_count(options: PredictOptions) -> tuple[int, str | None]:
    """Workers for these options, and a note when --workers was capped: --workers when given, at
    most --batch-size (each worker computes at least one image, so the images in flight stay
    bounded by the batch size); one when --threads is given or the members run on a GPU (a single
    pipeline); else the physical cores, at most the batch size."""
    if options.workers is not None:
        if options.workers < 1:
            raise EnsError(
                f"--workers {options.workers} must be at least 1; leave it out to use the physical cores"
            )
        if options.workers > options.batch_size:
            note = f"--workers {options.workers} capped to --batch-size {options.batch_size} (one image each)"
            return options.batch_size, note
        return options.workers, None
    if options.threads is not None or requested_providers(options.device) != [CPU]:
        return 1, None
    return min(physical_cores(), options.batch_size), None


def session_threads(options: PredictOptions, workers: int) -> int | None:
    """Intra-op threads per session: --threads when given, one per session with several workers,
    else None (the physical cores)."""
    if options.threads is not None:
        return options.threads
    return 1 if workers > 1 else None


def worker_batch(batch_size: int, workers: int) -> int:
    """Images per worker batch: --batch-size stays the number of images in flight."""
    return max(1, math.ceil(batch_size / workers))


def ordered_batches(
    score: Callable[[np.ndarray, np.ndarray, Timings], T],
    batches: Iterator[Batch],
    workers: int,
    timings: Timings,
) -> Iterator[tuple[np.ndarray, T]]:
    """(ids, `score(ids, images, worker_timings)`) of every batch of `batches`, in their order.

    With one worker everything runs in the calling thread, as a plain loop, timed into `timings`.
    With K workers at most K + 1 batches are in flight: K being computed and one handed to the
    caller; each worker thread has its own timings, added to `timings` at the end. Batches are read
    in the calling thread. Close the iterator (`contextlib.closing`) to stop early.
    """
    if workers == 1:
        while True:
            with timings("load"):
                batch = next(batches, None)
            if batch is None:
                return
            ids, images = batch
            yield ids, score(ids, images, timings)
    local = threading.local()
    worker_timings: list[Timings] = []
    lock = threading.Lock()

    def work(ids: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, T]:
        own = getattr(local, "timings", None)
        if own is None:
            own = local.timings = Timings()
            with lock:
                worker_timings.append(own)
        return ids, score(ids, images, own)

    pending: deque[Future[tuple[np.ndarray, T]]] = deque()
    executor = ThreadPoolExecutor(workers, thread_name_prefix="ens-worker")
    try:
        done = False
        while not done:
            with timings("load"):
                batch = next(batches, None)
            done = batch is None
            if batch is not None:
                pending.append(executor.submit(work, *batch))
            while pending and (done or len(pending) > workers):
                yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        for own in worker_timings:
            timings.add(own)
