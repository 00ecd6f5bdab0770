"""The compiled scorer: the ensemble served by one session of its compiled graph.

`CompiledScorer.score` returns the graph's labels before cleanup (and the fused scores when
--save-probs needs them); the prediction loop decodes and cleans every engine's batches alike, so
cleanup stays in Numba. On a GPU the graph runs through IO binding and only its requested outputs
reach the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.compiled.graph import INPUT, LABELS, SCORES
from ensemble.compiled.stamp import read_graph
from ensemble.data.sources import Source
from ensemble.errors import EnsError
from ensemble.files.hashing import file_sha256
from ensemble.inference.batchpool import WorkerLayout, worker_layout
from ensemble.inference.description import Described, EnsembleDescription, describe_ensemble
from ensemble.inference.options import PredictOptions
from ensemble.inference.scorer import Scored, run_warnings
from ensemble.members.channels import check_channels, to_pixels
from ensemble.members.member import Member
from ensemble.members.padding import padded_size
from ensemble.members.session import ORT_ERRORS, SessionReport, open_session, ort_message, quiet_run_options
from ensemble.runtimes.kinds import RuntimeChoice, ort_choice
from ensemble.timing import Timings


@dataclass(frozen=True)
class GraphMember:
    """A member that runs inside the compiled graph: its metadata and the graph session's report."""

    member: Member
    report: SessionReport


class CompiledScorer(Described):
    """The ensemble run by one session of the compiled graph at `graph`: `score` returns the graph's
    labels, and its fused scores with `want_scores`."""

    described_as = "compiled graph"  # what computed the labels, in a run's summary line

    def __init__(
        self,
        description: EnsembleDescription,
        layout: WorkerLayout,
        graph: Path,
        *,
        want_scores: bool = False,
        notes: tuple[str, ...] = (),
    ) -> None:
        self.description, self.graph, self.want_scores = description, Path(graph), want_scores
        self.workers, self.worker_batch = layout.workers, layout.worker_batch
        self.timings = Timings()
        self.notes = [*([layout.note] if layout.note else []), *notes]
        with self.timings("sessions"):
            data, _ = read_graph(self.graph)  # the session runs the very bytes whose seal was checked
            self.session, self.report = open_session(
                data,
                f"compiled graph {str(self.graph)!r}",
                "re-create it with `ens compile`",
                description.options.device,
                layout.threads,
            )
        self.outputs = [LABELS, SCORES] if want_scores else [LABELS]
        self.run_options = quiet_run_options()
        self.runners = [GraphMember(member, self.report) for member in description.members]
        self.choices = compiled_choices(description.options.runtime, len(description.members))

    @property
    def threads(self) -> int:
        """Intra-op threads of the graph's session."""
        return self.report.threads

    @property
    def warnings(self) -> list[str]:
        return run_warnings(self.runners, self.choices, self.notes)

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        """Refuse images a member would need padded: the graph feeds every member the image itself."""
        self.description.check_image_shape(shape)
        reason = padding_reason(self.description.members, shape)
        if reason:
            raise EnsError(f"{reason}; use --graph pipeline")

    def check_source(self, source: Source) -> None:
        """Refuse a source the members cannot take, or whose images the graph would need padded."""
        check_channels(self.channels, source.channels, self.options.gray_to_rgb)
        for group in source.groups:
            self.check_image_shape(group.shape)

    def score(self, ids: np.ndarray, images: np.ndarray, timings: Timings) -> Scored:
        """The graph's labels (before cleanup) for a uint8 (B, H, W) or (B, H, W, 3) batch, and its
        fused scores with `want_scores`."""
        pixels = to_pixels(images, self.channels)
        self.check_image_shape(pixels.shape[2:])
        try:
            with timings("inference"):
                outputs = self._run(np.ascontiguousarray(pixels, dtype=np.float32))
        except ORT_ERRORS as exc:
            raise EnsError(
                f"the compiled graph {str(self.graph)!r} failed on input {tuple(pixels.shape)} "
                f"({ort_message(exc)}); use --graph pipeline"
            ) from exc
        labels = outputs[0] if outputs[0].flags.writeable else outputs[0].copy()
        return Scored(scores=outputs[1] if self.want_scores else None, labels=labels)

    def _run(self, pixels: np.ndarray) -> list[np.ndarray]:
        if not self.report.on_gpu:
            return self.session.run(self.outputs, {INPUT: pixels}, self.run_options)
        binding = self.session.io_binding()  # only the bound outputs are copied to the host
        binding.bind_cpu_input(INPUT, pixels)
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding, self.run_options)
        return binding.copy_outputs_to_cpu()

    def manifest(self) -> dict:
        """The manifest's record of the engine: its graph's path and sha256, the providers used."""
        return {
            "name": "compiled",
            "graph": str(self.graph),
            "graph_sha256": file_sha256(self.graph),
            "providers": list(self.report.used),
            "notes": list(self.notes),
        }


def open_compiled(
    members: list[Member] | tuple[Member, ...],
    options: PredictOptions,
    graph: Path,
    *,
    want_scores: bool = False,
    notes: tuple[str, ...] = (),
) -> CompiledScorer:
    """The compiled engine of `members` under `options`, running the graph at `graph`."""
    description = describe_ensemble(members, options)
    return CompiledScorer(description, worker_layout(options), graph, want_scores=want_scores, notes=notes)


def compiled_choices(runtime: str, count: int) -> list[RuntimeChoice]:
    """What the manifest says of each member's runtime under the compiled graph: ONNX Runtime."""
    if runtime == "ort":
        return [ort_choice("requested") for _ in range(count)]
    return [ort_choice("default", note="the compiled graph runs on ONNX Runtime")] * count


def padding_reason(members, shape: tuple[int, int]) -> str | None:
    """Why images of `shape` cannot go through the compiled graph (a member needs them padded), or None."""
    for member in members:
        size = padded_size(member, tuple(shape))
        if size != tuple(shape):
            return (
                f"member {member.name!r} needs {shape[0]}x{shape[1]} images padded to {size[0]}x{size[1]}, "
                "which the compiled graph does not do"
            )
    return None
