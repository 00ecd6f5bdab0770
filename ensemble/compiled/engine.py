"""The choice between the pipeline and the compiled graph for a run (`--graph auto|pipeline|compiled`:
`auto` takes the graph on a GPU only, since on CPU the pipeline's per-member runtimes are faster).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from ensemble.compiled.scorer import CompiledScorer, open_compiled, padding_reason
from ensemble.compiled.stamp import graph_path, read_stamp, wanted_stamp
from ensemble.data.sources import Source
from ensemble.errors import EnsError
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import PipelineScorer, open_pipeline
from ensemble.members.member import Member
from ensemble.members.session import CPU, requested_providers

CPU_NOTE = (
    "the compiled graph is used on a GPU; on CPU the pipeline runs each member on its fastest runtime "
    "(--graph compiled runs the graph)"
)


class GraphChoice(str, Enum):
    """How `ens predict` runs the members: `auto` takes a matching compiled graph on a GPU."""

    auto = "auto"
    pipeline = "pipeline"
    compiled = "compiled"


def graph_problem(
    members: list[Member], options: PredictOptions, ensemble_file: Path | None, source: Source | None
) -> tuple[str, str] | None:
    """Why the compiled graph of `ensemble_file` cannot serve this run (on `source`, when known), and
    what to do about it; None when it can."""
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
    for group in source.groups if source is not None else ():
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
    source: Source | None,
    want_scores: bool = False,
    **choosing,
) -> PipelineScorer | CompiledScorer:
    """The pipeline or the compiled engine for a run, as `--graph` asks, checked against `source` when
    given (the pipeline's members on the runtimes chosen for it; `choosing` goes to `open_pipeline`).

    `auto` takes the compiled graph beside the ensemble file when it matches the run and the members
    run on a GPU, where only its labels cross to the host; on CPU the pipeline, whose per-member
    runtimes are faster there (benchmarks/README.md), and a note whenever a graph exists. `compiled`
    takes a matching graph anywhere; without one it is an error with a hint to run `ens compile`.
    """
    engine = GraphChoice(engine)
    if engine is GraphChoice.pipeline:
        return open_pipeline(members, options, source, **choosing)
    problem = graph_problem(members, options, ensemble_file, source)
    on_gpu = requested_providers(options.device) != [CPU]
    if problem is None and (engine is GraphChoice.compiled or on_gpu):
        graph = graph_path(ensemble_file)  # type: ignore[arg-type]
        compiled = open_compiled(members, options, graph, want_scores=want_scores)
        if source is not None:
            compiled.check_source(source)
        return compiled
    if engine is GraphChoice.compiled:
        reason, hint = problem  # type: ignore[misc]
        raise EnsError(f"--graph compiled: {reason}; {hint}")
    notes: tuple[str, ...] = ()
    if ensemble_file is not None and graph_path(ensemble_file).is_file():
        notes = (f"{problem[0] if problem else CPU_NOTE}; running the pipeline",)
    return open_pipeline(members, options, source, notes=notes, **choosing)
