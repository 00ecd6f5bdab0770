"""The compiled engine: the pipeline's per-batch interface served by one session of the compiled
graph, and the choice between it and the pipeline for a run (`--graph auto|pipeline|compiled`:
`auto` takes it on a GPU only, since on CPU the pipeline's per-member runtimes are faster).

`CompiledEnsemble` is an `Ensemble` whose `probabilities` returns the graph's outputs (labels, and
the fused scores when --save-probs needs them); `unscaled` and `labels` take them as the pipeline's
take its scores, so the prediction loop is the same for both engines and cleanup stays in Numba.
On a GPU the graph runs through IO binding and only its requested outputs reach the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar

import numpy as np

from ensemble.compiled.graph import INPUT, LABELS, SCORES
from ensemble.compiled.stamp import graph_path, read_graph, read_stamp, wanted_stamp
from ensemble.data.sources import Source
from ensemble.errors import EnsError
from ensemble.files.hashing import file_sha256
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import Ensemble
from ensemble.members.channels import to_pixels
from ensemble.members.member import Member
from ensemble.members.padding import padded_size
from ensemble.members.session import (
    CPU,
    ORT_ERRORS,
    SessionReport,
    open_session,
    ort_message,
    quiet_run_options,
    requested_providers,
)

CPU_NOTE = (
    "the compiled graph is used on a GPU; on CPU the pipeline runs each member on its fastest runtime "
    "(--graph compiled runs the graph)"
)


class GraphChoice(str, Enum):
    """How `ens predict` runs the members: `auto` takes a matching compiled graph on a GPU."""

    auto = "auto"
    pipeline = "pipeline"
    compiled = "compiled"


@dataclass(frozen=True)
class GraphMember:
    """A member that runs inside the compiled graph: its metadata and the graph session's report."""

    member: Member
    report: SessionReport


@dataclass(frozen=True)
class GraphOutput:
    """One batch through the graph: uint8 (B, H, W) labels before cleanup, and the fused
    (B, C, H, W) scores (probabilities times the class gains) when they were asked for."""

    labels: np.ndarray
    scores: np.ndarray | None = None


@dataclass
class CompiledEnsemble(Ensemble):
    """An `Ensemble` that runs its compiled graph (`graph`) instead of one session per member."""

    engine: ClassVar[str] = "compiled"
    graph: Path | None = None
    want_scores: bool = False

    def open_sessions(self, threads: int | None) -> list[GraphMember]:
        if self.graph is None:
            raise EnsError(
                "CompiledEnsemble needs the path of its compiled graph; write one with `ens compile`"
            )
        data, _ = read_graph(self.graph)  # the session runs the very bytes whose seal was checked
        self.session, self.report = open_session(
            data,
            f"compiled graph {str(self.graph)!r}",
            "re-create it with `ens compile`",
            self.options.device,
            threads,
        )
        self.outputs = [LABELS, SCORES] if self.want_scores else [LABELS]
        self.run_options = quiet_run_options()
        return [GraphMember(member, self.report) for member in self.members]

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        """Refuse images a member would need padded: the graph feeds every member the image itself."""
        super().check_image_shape(shape)
        reason = padding_reason(self.members, shape)
        if reason:
            raise EnsError(f"{reason}; use --graph pipeline")

    def probabilities(  # type: ignore[override]
        self, ids: np.ndarray, images: np.ndarray, *, merger=None, timings=None
    ) -> GraphOutput:
        """The graph's outputs for a uint8 (B, H, W) or (B, H, W, 3) batch; a worker thread passes
        its own `timings` (`merger` is the pipeline's and unused here)."""
        pixels = to_pixels(images, self.channels)
        self.check_image_shape(pixels.shape[2:])
        try:
            with (timings or self.timings)("inference"):
                outputs = self._run(np.ascontiguousarray(pixels, dtype=np.float32))
        except ORT_ERRORS as exc:
            raise EnsError(
                f"the compiled graph {str(self.graph)!r} failed on input {tuple(pixels.shape)} "
                f"({ort_message(exc)}); use --graph pipeline"
            ) from exc
        labels = outputs[0] if outputs[0].flags.writeable else outputs[0].copy()
        return GraphOutput(labels, outputs[1] if self.want_scores else None)

    def _run(self, pixels: np.ndarray) -> list[np.ndarray]:
        if not self.report.on_gpu:
            return self.session.run(self.outputs, {INPUT: pixels}, self.run_options)
        binding = self.session.io_binding()  # only the bound outputs are copied to the host
        binding.bind_cpu_input(INPUT, pixels)
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding, self.run_options)
        return binding.copy_outputs_to_cpu()

    def unscaled(self, output: GraphOutput) -> np.ndarray:  # type: ignore[override]
        if output.scores is None:
            raise EnsError(
                "the compiled engine was opened without its scores output; open it with want_scores"
            )
        return super().unscaled(output.scores)

    def labels(self, output: GraphOutput) -> np.ndarray:  # type: ignore[override]
        """The graph's labels with small regions removed."""
        return self.clean(output.labels)


def padding_reason(members: list[Member], shape: tuple[int, int]) -> str | None:
    """Why images of `shape` cannot go through the compiled graph (a member needs them padded), or None."""
    for member in members:
        size = padded_size(member, tuple(shape))
        if size != tuple(shape):
            return (
                f"member {member.name!r} needs {shape[0]}x{shape[1]} images padded to {size[0]}x{size[1]}, "
                "which the compiled graph does not do"
            )
    return None


def graph_problem(
    members: list[Member], options: PredictOptions, ensemble_file: Path | None, source: Source
) -> tuple[str, str] | None:
    """Why the compiled graph of `ensemble_file` cannot serve this run, and what to do about it; None
    when it can."""
    pipeline = "use --graph pipeline"
    if options.runtime == "openvino":
        return (
            "--runtime openvino runs each member on OpenVINO, the compiled graph runs on ONNX Runtime",
            f"drop --runtime openvino, or {pipeline}",
        )
    if ensemble_file is None:
        return (
            "the run has no ensemble file (a compiled graph belongs to one)",
            f"pass --ensemble, or {pipeline}",
        )
    for group in source.groups:
        reason = padding_reason(members, group.shape)
        if reason:
            return reason, pipeline
    graph = graph_path(ensemble_file)
    compile_hint = f"write a matching graph with `ens compile --ensemble {ensemble_file}`, or {pipeline}"
    if not graph.is_file():
        return f"there is no compiled graph at {str(graph)!r}", compile_hint
    try:
        reason = read_stamp(graph).mismatch(wanted_stamp(members, options, ensemble_file))
    except EnsError as exc:
        return str(exc), compile_hint
    if reason:
        return f"the compiled graph {str(graph)!r} does not match this run: {reason}", compile_hint
    return None


def open_engine(
    engine: GraphChoice | str,
    members: list[Member],
    options: PredictOptions,
    ensemble_file: Path | None,
    source: Source,
    want_scores: bool = False,
) -> Ensemble:
    """The pipeline or the compiled engine for a run, as `--graph` asks.

    `auto` takes the compiled graph beside the ensemble file when it matches the run and the members
    run on a GPU, where only its labels cross to the host; on CPU the pipeline, whose per-member
    runtimes are faster there (benchmarks/README.md), and a note whenever a graph exists. `compiled`
    takes a matching graph anywhere; without one it is an error with a hint to run `ens compile`.
    """
    engine = GraphChoice(engine)
    if engine is GraphChoice.pipeline:
        return Ensemble(members, options)
    problem = graph_problem(members, options, ensemble_file, source)
    on_gpu = requested_providers(options.device) != [CPU]
    if problem is None and (engine is GraphChoice.compiled or on_gpu):
        graph = graph_path(ensemble_file)  # type: ignore[arg-type]
        return CompiledEnsemble(members, options, graph=graph, want_scores=want_scores)
    if engine is GraphChoice.compiled:
        reason, hint = problem  # type: ignore[misc]
        raise EnsError(f"--graph compiled: {reason}; {hint}")
    ensemble = Ensemble(members, options)
    if ensemble_file is not None and graph_path(ensemble_file).is_file():
        reason = problem[0] if problem else CPU_NOTE
        ensemble.notes.append(f"{reason}; running the pipeline")
    return ensemble


def engine_manifest(ensemble: Ensemble) -> dict:
    """The manifest's record of the engine that ran, and its graph's path and sha256."""
    if not isinstance(ensemble, CompiledEnsemble):
        return {"name": ensemble.engine, "notes": list(ensemble.notes)}
    return {
        "name": ensemble.engine,
        "graph": str(ensemble.graph),
        "graph_sha256": file_sha256(ensemble.graph),
        "providers": list(ensemble.report.used),
        "notes": list(ensemble.notes),
    }
