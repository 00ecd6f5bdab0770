"""The one batch loop: batches -> ordered scores (the worker pool) -> cleaned labels (and the fused
probabilities when asked) -> a sink. The local engine (`run`), the Ray actors and the Python API
all predict through `label_batches`.

Memory is bounded by the batch size: only one batch of probabilities exists at a time, and `run`
writes the submission batch by batch to a temp file renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.metrics import ConfusionAccumulator
from ensemble.data.sources import Source
from ensemble.inference.batchpool import Batch, ordered_batches
from ensemble.inference.scorer import Scorer, final_labels, unscaled
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.io import SubmissionWriter

Sink = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], None]


@dataclass(frozen=True)
class PredictResult:
    """What a run did: counts, wall time, per-stage seconds and, for labelled images, the confusion."""

    n_images: int
    seconds: float
    timings: dict[str, float]
    confusion: np.ndarray | None


def label_batches(scorer: Scorer, batches: Iterator[Batch], sink: Sink, probs: bool = False) -> None:
    """Score `batches` on the scorer's workers and hand each batch's ids, cleaned uint8 labels and,
    with `probs`, fused float32 probabilities (class gains divided out; else None) to `sink`, in
    batch order, in the calling thread."""
    description, timings = scorer.description, scorer.timings
    scored = ordered_batches(scorer.score, batches, scorer.workers, timings)
    with contextlib.closing(scored):
        for ids, out in scored:
            probabilities = unscaled(description, out) if probs else None
            sink(ids, final_labels(description, out, timings), probabilities)


def run(
    scorer: Scorer,
    source: Source,
    csv_path: Path,
    fmt: str = "rle",
    truth: Callable[[np.ndarray], np.ndarray] | None = None,
    on_batch: Callable[[int], None] | None = None,
    *,
    rle: RleConvention = DEFAULT_RLE,
    writer=None,
    probs: bool = False,
) -> PredictResult:
    """Predict every image of `source` and write the submission atomically (nothing on failure).

    `truth` (a batch's ids -> their true masks) adds a confusion matrix of the final labels; `rle`
    is the convention of an `rle` CSV. `writer` (a context manager with `write(ids, labels)`, such
    as the shard writer of a resumable run) takes the labels instead of a CSV at `csv_path`, and
    with `probs` each batch's fused probabilities too (`write(ids, labels, probs)`).
    """
    description, timings = scorer.description, scorer.timings
    description.check_source(source)
    n_classes = description.n_classes
    confusion = ConfusionAccumulator(n_classes) if truth is not None else None
    start = time.perf_counter()
    shape = source.image_shape  # None when the sizes are mixed
    with writer or SubmissionWriter(csv_path, fmt, shape, n_classes, rle=rle) as writer:

        def sink(ids: np.ndarray, labels: np.ndarray, batch_probs: np.ndarray | None) -> None:
            with timings("write"):
                if probs:
                    writer.write(ids, labels, batch_probs)
                else:
                    writer.write(ids, labels)
            if confusion is not None:
                with timings("score"):
                    confusion.update(truth(ids), labels)
            if on_batch:
                on_batch(len(ids))

        batches = source.batches(scorer.worker_batch, description.channels)
        label_batches(scorer, batches, sink, probs=probs)
    return PredictResult(
        n_images=source.n_images,
        seconds=time.perf_counter() - start,
        timings=timings.as_dict(),
        confusion=None if confusion is None else confusion.matrix,
    )
