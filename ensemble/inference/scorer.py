"""What every engine gives the prediction loop: a `Scorer` turns one batch of images into a `Scored`
(fused scores, labels before cleanup, or both), and `final_labels` / `unscaled` turn that into
cleaned labels and probabilities in one place for every engine (cleanup stays in Numba)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ensemble.errors import EnsError
from ensemble.inference.cleanup import remove_small_regions
from ensemble.inference.description import EnsembleDescription
from ensemble.inference.fusion import decode
from ensemble.runtimes.kinds import RuntimeChoice
from ensemble.runtimes.runner import Runner
from ensemble.timing import Timings


@dataclass(frozen=True)
class Scored:
    """One scored batch: the fused (B, C, H, W) scores (probabilities times the class gains) and/or
    the uint8 (B, H, W) labels decoded from them, before cleanup."""

    scores: np.ndarray | None = None
    labels: np.ndarray | None = None


@runtime_checkable
class Scorer(Protocol):
    """An opened ensemble: its description, worker layout, the runner and runtime choice reported for
    each member, its sessions' threads and warnings, the scores of one batch (timed into a worker's
    own `timings`) and its record in the manifest."""

    description: EnsembleDescription
    workers: int
    worker_batch: int
    timings: Timings
    runners: list[Runner]
    choices: list[RuntimeChoice]
    notes: list[str]
    described_as: str

    @property
    def threads(self) -> int: ...

    @property
    def warnings(self) -> list[str]: ...

    def score(self, ids: np.ndarray, images: np.ndarray, timings: Timings) -> Scored: ...

    def manifest(self) -> dict: ...


def final_labels(description: EnsembleDescription, scored: Scored, timings: Timings) -> np.ndarray:
    """The batch's labels: decoded from the scores unless the engine decoded them, small regions
    removed in place (Numba; skipped when min_area is 0)."""
    labels = scored.labels
    if labels is None:
        with timings("decode"):
            labels = decode(scored.scores, description.options.allow_background)
    if description.min_area.any():
        with timings("cleanup"):
            remove_small_regions(
                labels,
                description.min_area,
                description.n_classes,
                description.options.connectivity,
                out=labels,
            )
    return labels


def unscaled(description: EnsembleDescription, scored: Scored) -> np.ndarray:
    """The fused probabilities behind a batch's scores (the class gains divided out)."""
    if scored.scores is None:
        raise EnsError("the compiled engine was opened without its scores output; open it with want_scores")
    gain = description.class_gain
    if (gain == 1).all():
        return scored.scores
    return scored.scores / gain.astype(np.float32)[None, :, None, None]


def run_warnings(runners: list[Runner], choices: list[RuntimeChoice], notes: list[str]) -> list[str]:
    """Provider fallbacks and thread caps of the sessions, each once, then the runtime choices'
    warnings and the run's notes."""
    fallbacks = sorted({r.report.fallback for r in runners if r.report.fallback})
    caps = {r.report.threads_note for r in runners if r.report.threads_note}
    runtime = [c.warning for c in choices if c.warning]
    return [*fallbacks, *sorted(caps), *runtime, *notes]
