"""The pipeline scorer: each member on its own runner (an ONNX Runtime session, or the runtime chosen
for it), TTA views merged per member, members fused by their weights times the class gains.

`open_pipeline` builds it in order: the description, the worker layout, one ONNX Runtime session
per member, then each member's runtime choice (made now, carried from a driver, or none), so nothing
changes a scorer after it is built.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ensemble.data.sources import Source
from ensemble.data.tta import View
from ensemble.inference.batchpool import WorkerLayout, worker_layout
from ensemble.inference.description import Described, EnsembleDescription, describe_ensemble
from ensemble.inference.fusion import WeightedMerger
from ensemble.inference.options import PredictOptions
from ensemble.inference.runner import checked_probs
from ensemble.inference.scorer import Scored, run_warnings
from ensemble.members.channels import to_pixels
from ensemble.members.member import Member
from ensemble.members.session import MemberSession, build_session
from ensemble.runtimes.carried import carried_choices
from ensemble.runtimes.choice import runtime_choices
from ensemble.runtimes.kinds import RuntimeChoice, ort_choice
from ensemble.runtimes.runner import Runner
from ensemble.timing import Timings

Chosen = list[tuple[RuntimeChoice, Runner | None]]


@dataclass(frozen=True, eq=False)
class MemberSessions:
    """The members' ONNX Runtime sessions in their worker layout: what a runtime choice reads."""

    description: EnsembleDescription
    layout: WorkerLayout
    ort_runners: list[MemberSession]

    @property
    def members(self) -> tuple[Member, ...]:
        return self.description.members

    @property
    def views(self) -> tuple[View, ...]:
        return self.description.views

    @property
    def channels(self) -> int:
        return self.description.channels

    @property
    def workers(self) -> int:
        return self.layout.workers

    @property
    def worker_batch(self) -> int:
        return self.layout.worker_batch


def open_sessions(description: EnsembleDescription, layout: WorkerLayout) -> MemberSessions:
    """One ONNX Runtime session per member, with the layout's intra-op threads."""
    device = description.options.device
    runners = [build_session(m, device, layout.threads) for m in description.members]
    return MemberSessions(description, layout, runners)


class PipelineScorer(Described):
    """Scores batches member by member; `runners` are the members' runners, `ort_runners` their ONNX
    Runtime sessions (the same unless another runtime took a member over)."""

    described_as = "pipeline"  # what computed the labels, in a run's summary line

    def __init__(
        self, sessions: MemberSessions, chosen: Chosen | None = None, *, timings: Timings, notes=()
    ) -> None:
        self.description = sessions.description
        self.workers, self.worker_batch = sessions.layout.workers, sessions.layout.worker_batch
        self.ort_runners = list(sessions.ort_runners)
        chosen = chosen or [(ort_choice("default"), None) for _ in self.ort_runners]
        self.runners: list[Runner] = [r or o for (_, r), o in zip(chosen, self.ort_runners, strict=True)]
        self.choices = [choice for choice, _ in chosen]
        self.timings = timings
        self.notes = [*([sessions.layout.note] if sessions.layout.note else []), *notes]
        self._local = threading.local()  # one fusion buffer per worker thread, reused across batches

    @property
    def threads(self) -> int:
        """Intra-op threads of the members' sessions."""
        return self.ort_runners[0].report.threads

    @property
    def warnings(self) -> list[str]:
        return run_warnings(self.runners, self.choices, self.notes)

    def score(self, ids: np.ndarray, images: np.ndarray, timings: Timings) -> Scored:
        """Fused (B, C, H, W) scores of a uint8 (B, H, W) or (B, H, W, 3) batch: probabilities times
        the class gains."""
        pixels = to_pixels(images, self.channels)
        merger = getattr(self._local, "merger", None)
        if merger is None:
            merger = self._local.merger = WeightedMerger(self.description.merge_weights)
        for index, runner in enumerate(self.runners):
            probs = checked_probs(runner, ids, pixels, self.views, timings)
            with timings("fusion"):
                merger.append(index, probs)
        with timings("fusion"):
            return Scored(scores=merger.result())

    def manifest(self) -> dict:
        """The manifest's record of the engine."""
        return {"name": "pipeline", "notes": list(self.notes)}


def open_pipeline(
    members: list[Member] | tuple[Member, ...],
    options: PredictOptions,
    source: Source | None = None,
    *,
    runtime: str | None = None,
    carried: list[RuntimeChoice] | None = None,
    notes: tuple[str, ...] = (),
    **choosing,
) -> PipelineScorer:
    """The pipeline of `members` under `options`, each member on its runtime: `carried` (choices made
    by a driver for the same members and options), else chosen for `source` with `runtime` (default
    `options.runtime`; `choosing` goes to `runtime_choices`), else ONNX Runtime when there is no
    source. `source` is checked against the members before any choice."""
    description = describe_ensemble(members, options)
    layout = worker_layout(options)
    timings = Timings()
    with timings("sessions"):
        sessions = open_sessions(description, layout)
    chosen: Chosen | None = None
    if carried is not None:
        chosen = carried_choices(sessions, carried)
    elif source is not None:
        description.check_source(source)
        chosen = runtime_choices(sessions, source, runtime or options.runtime, **choosing)
    return PipelineScorer(sessions, chosen, timings=timings, notes=notes)
