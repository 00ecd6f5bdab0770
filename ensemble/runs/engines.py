"""Opening an ensemble for prediction, the same way for `ens predict` and the Python API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ensemble.compiled.engine import GraphChoice, open_engine
from ensemble.compiled.scorer import CompiledScorer
from ensemble.data.sources import Source
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import PipelineScorer
from ensemble.members.member import Member

Engine = PipelineScorer | CompiledScorer


def open_ensemble(
    members: list[Member],
    options: PredictOptions,
    *,
    source: Source | None = None,
    ensemble_file: Path | None = None,
    graph: GraphChoice | str = GraphChoice.auto,
    want_scores: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Engine:
    """The engine `graph` asks for (pipeline, compiled graph of `ensemble_file`, or `auto`), its
    sessions open, checked against `source` and each pipeline member on the runtime
    `options.runtime` chooses on the source's first batch (`on_note` hears when a member is timed;
    without a source the members run on ONNX Runtime). `want_scores`: a compiled graph also returns
    its fused scores (for probabilities)."""
    return open_engine(graph, members, options, ensemble_file, source, want_scores, on_timing=on_note)
