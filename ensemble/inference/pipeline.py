"""The prediction pipeline: stream batches through members -> TTA -> fusion -> decode -> cleanup -> CSV.

Memory is bounded by the batch size: only one batch of probabilities exists at a time, and the
submission is written batch by batch to a temp file renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ensemble.data.metrics import ConfusionAccumulator
from ensemble.data.sources import Source
from ensemble.data.tta import get_views
from ensemble.errors import EnsError
from ensemble.inference.batchpool import ordered_batches, session_threads, worker_batch, worker_count
from ensemble.inference.cleanup import min_area_array, remove_small_regions
from ensemble.inference.fusion import WeightedMerger, decode, gain_array, normalise_weights, scaled_weights
from ensemble.inference.options import PredictOptions
from ensemble.inference.probstore import ProbsWriter
from ensemble.inference.runner import check_finite, member_probs
from ensemble.members.channels import check_channels, to_pixels
from ensemble.members.member import Member
from ensemble.members.padding import check_fits
from ensemble.members.session import MemberSession, build_session
from ensemble.members.store import NO_MEMBERS
from ensemble.runtimes.kinds import RuntimeChoice, ort_choice
from ensemble.runtimes.runner import Runner
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.io import SubmissionWriter
from ensemble.timing import Timings


@dataclass
class Ensemble:
    """Members with their live sessions and resolved fusion/cleanup settings."""

    engine: ClassVar[str] = "pipeline"
    members: list[Member]
    options: PredictOptions
    runners: list[MemberSession | Runner] = field(init=False)
    weights: np.ndarray = field(init=False)
    min_area: np.ndarray = field(init=False)
    timings: Timings = field(default_factory=Timings)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.members:
            raise EnsError(NO_MEMBERS)
        n_members, n_classes = len(self.members), self.members[0].n_classes
        weights = np.ones(n_members) if self.options.weights is None else self.options.weights
        self.weights = normalise_weights(weights, n_members, n_classes)
        self.class_gain = gain_array(self.options.class_gain, n_classes)
        self.merge_weights = scaled_weights(self.weights, self.class_gain)
        self._merger = WeightedMerger(self.merge_weights)  # kept across batches to reuse its buffer
        self.min_area = min_area_array(self.options.min_area, n_classes)
        self.views = get_views(self.options.tta)
        if self.options.batch_size < 1:
            raise EnsError(f"--batch-size {self.options.batch_size} must be >= 1")
        self.workers, workers_note = worker_count(self.options)
        if workers_note:
            self.notes.append(workers_note)
        self.worker_batch = worker_batch(self.options.batch_size, self.workers)
        threads = session_threads(self.options, self.workers)
        with self.timings("sessions"):
            self.runners = self.open_sessions(threads)
        self.ort_runners = list(self.runners)  # kept when another runtime takes a member over
        self.choices: list[RuntimeChoice] = [ort_choice("default") for _ in self.members]

    def open_sessions(self, threads: int | None) -> list[MemberSession]:
        """One ONNX Runtime session per member with `threads` intra-op threads (the compiled engine
        opens its graph instead)."""
        return [build_session(m, self.options.device, threads) for m in self.members]

    @property
    def n_classes(self) -> int:
        return self.members[0].n_classes

    @property
    def fallbacks(self) -> list[str]:
        return sorted({r.report.fallback for r in self.runners if r.report.fallback})

    @property
    def warnings(self) -> list[str]:
        """Provider fallbacks and thread caps of the sessions, each once, then the run's notes."""
        notes = {r.report.threads_note for r in self.runners if r.report.threads_note}
        runtime = [c.warning for c in self.choices if c.warning]
        return [*self.fallbacks, *sorted(notes), *runtime, *self.notes]

    @property
    def channels(self) -> int:
        """Input channels of the members (1 grayscale, 3 RGB); all members take the same."""
        return self.members[0].channels

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        """Refuse images larger than a fixed-size member (smaller ones are padded to it)."""
        for member in self.members:
            check_fits(member, shape)

    def check_source(self, source: Source) -> None:
        """Refuse a source whose image sizes or channels the members cannot take, before any work."""
        check_channels(self.channels, source.channels, self.options.gray_to_rgb)
        for group in source.groups:
            self.check_image_shape(group.shape)

    def probabilities(
        self,
        ids: np.ndarray,
        images: np.ndarray,
        *,
        merger: WeightedMerger | None = None,
        timings: Timings | None = None,
    ) -> np.ndarray:
        """Fused (B, C, H, W) scores of a uint8 (B, H, W) or (B, H, W, 3) batch: probabilities times
        the class gains. A worker thread passes its own `merger` and `timings`."""
        pixels = to_pixels(images, self.channels)
        merger = merger or self._merger
        timings = timings or self.timings
        for index, runner in enumerate(self.runners):
            probs = member_probs(runner, pixels, self.views, timings)
            with timings("checks"):
                check_finite(probs, runner.member.name, ids)
            with timings("fusion"):
                merger.append(index, probs)
        with timings("fusion"):
            return merger.result()

    def unscaled(self, scores: np.ndarray) -> np.ndarray:
        """The fused probabilities behind `probabilities()` scores (the class gains divided out)."""
        if (self.class_gain == 1).all():
            return scores
        return scores / self.class_gain.astype(np.float32)[None, :, None, None]

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Decode fused probabilities and remove small regions."""
        with self.timings("decode"):
            labels = decode(probs, self.options.allow_background)
        return self.clean(labels)

    def clean(self, labels: np.ndarray) -> np.ndarray:
        """Remove small regions of decoded labels in place (Numba; skipped when min_area is 0)."""
        if self.min_area.any():
            with self.timings("cleanup"):
                remove_small_regions(
                    labels, self.min_area, self.n_classes, self.options.connectivity, out=labels
                )
        return labels


@dataclass(frozen=True)
class PredictResult:
    """What a run did: counts, wall time, per-stage seconds and, for labelled images, the confusion."""

    n_images: int
    seconds: float
    timings: dict[str, float]
    confusion: np.ndarray | None


def run(
    ensemble: Ensemble,
    source: Source,
    csv_path: Path,
    fmt: str = "rle",
    save_probs: Path | None = None,
    truth: Callable[[np.ndarray], np.ndarray] | None = None,
    on_batch: Callable[[int], None] | None = None,
    *,
    rle: RleConvention = DEFAULT_RLE,
    writer=None,
) -> PredictResult:
    """Predict every image of `source` and write the submission atomically (nothing on failure).

    `truth` (a batch's ids -> their true masks) adds a confusion matrix of the final labels; `rle`
    is the convention of an `rle` CSV. `writer` (a context manager with `write(ids, labels)`, such
    as the shard writer of a resumable run) takes the labels instead of a CSV at `csv_path`.
    """
    ensemble.check_source(source)
    timings = ensemble.timings
    confusion = ConfusionAccumulator(ensemble.n_classes) if truth is not None else None
    start = time.perf_counter()
    shape = source.image_shape  # None when the sizes are mixed
    probs_writer = ProbsWriter(save_probs, source.n_images, ensemble.n_classes, shape) if save_probs else None
    with (
        writer or SubmissionWriter(csv_path, fmt, shape, ensemble.n_classes, rle=rle) as writer,
        probs_writer or contextlib.nullcontext(),
        contextlib.closing(
            ordered_batches(ensemble, source.batches(ensemble.worker_batch, ensemble.channels))
        ) as scored,
    ):
        for ids, probs in scored:
            if probs_writer is not None:
                with timings("save_probs"):
                    probs_writer.write(ids, ensemble.unscaled(probs))
            labels = ensemble.labels(probs)
            with timings("write"):
                writer.write(ids, labels)
            if confusion is not None:
                with timings("score"):
                    confusion.update(truth(ids), labels)
            if on_batch:
                on_batch(len(ids))
    return PredictResult(
        n_images=source.n_images,
        seconds=time.perf_counter() - start,
        timings=timings.as_dict(),
        confusion=None if confusion is None else confusion.matrix,
    )
