"""`ens compile` as a library call: resolve the ensemble file, build its graph, check it against the
pipeline on a few random images, and write it atomically beside the ensemble file."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ensemble.compiled.graph import build_graph
from ensemble.compiled.scorer import open_compiled
from ensemble.compiled.stamp import GraphStamp, graph_path, stamp_model, wanted_stamp
from ensemble.course import IMAGE_SHAPE
from ensemble.data.tta import get_views
from ensemble.errors import EnsError
from ensemble.files.atomic import atomic_files
from ensemble.files.outputs import refuse_overwrite, run_inputs
from ensemble.inference.fusion import decode, scaled_weights
from ensemble.inference.options import PredictOptions, resolve_options
from ensemble.inference.pipeline import open_pipeline
from ensemble.members.ensemblefile import resolve_ensemble
from ensemble.members.member import DEFAULT_STORE, Member
from ensemble.members.padding import padded_size

CHECK_IMAGES = 4
SCORE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class CompileResult:
    """The written graph, what it was built from, and its check against the pipeline."""

    path: Path
    stamp: GraphStamp
    n_nodes: int
    size_bytes: int
    check_shape: tuple[int, int]
    max_score_diff: float


def compile_ensemble(
    ensemble_file: Path | None = None,
    store: Path = DEFAULT_STORE,
    out: Path | None = None,
    *,
    tta: str | None = None,
    allow_background: bool = False,
) -> CompileResult:
    """Compile the ensemble file (default `<store>/ensemble.json`) with its weights, gains and TTA
    (or `tta`) into one graph at `out` (default `compiled/<stem>.onnx` beside the file)."""
    members, spec, spec_path = resolve_ensemble(None, ensemble_file, store)
    if spec_path is None:
        raise EnsError(
            f"no ensemble file to compile: {str(Path(store) / 'ensemble.json')!r} does not exist; "
            "write one with `ens fit`, or pass --ensemble FILE"
        )
    out = Path(out) if out is not None else graph_path(spec_path)
    refuse_overwrite({"--out": out}, run_inputs(None, members, spec_path))
    options = resolve_options(members, spec, PredictOptions(allow_background=allow_background), tta=tta)
    stamp = wanted_stamp(members, options, spec_path)
    merge = scaled_weights(np.asarray(stamp.weights, np.float64), np.asarray(stamp.class_gain))
    views = [view.name for view in get_views(options.tta)]
    model = build_graph(members, merge, views, allow_background)
    try:
        data = stamp_model(model, stamp)
    except ValueError as exc:
        raise EnsError(
            f"the compiled graph of {len(members)} members is too large for one ONNX file ({exc}); "
            "use --graph pipeline"
        ) from exc
    with atomic_files(out) as (tmp,):
        tmp.write_bytes(data)
        shape = check_shape(members)
        diff = check_against_pipeline(members, options, tmp, shape)
    return CompileResult(out, stamp, len(model.graph.node), len(data), shape, diff)


def check_shape(members: list[Member]) -> tuple[int, int]:
    """An image size every member takes without padding: the course's, rounded to the members'
    fixed sizes and size multiples."""
    shape = tuple(IMAGE_SHAPE)
    for _ in range(2):
        for member in members:
            shape = padded_size(member, shape)
    return shape  # type: ignore[return-value]


def check_against_pipeline(members: list[Member], options: PredictOptions, graph: Path, shape) -> float:
    """Run the graph and the pipeline on a few random images on CPU: the labels must be equal (but at
    exact ties) and the fused scores within SCORE_TOLERANCE; returns the largest score difference."""
    cpu = replace(options, device="cpu", threads=1, min_area=0)
    rng = np.random.default_rng(0)
    size = (CHECK_IMAGES, *shape) if members[0].channels == 1 else (CHECK_IMAGES, *shape, 3)
    images = rng.integers(0, 256, size, dtype=np.uint8)
    ids = np.arange(CHECK_IMAGES)
    pipeline = open_pipeline(members, cpu)
    scores = pipeline.score(ids, images, pipeline.timings).scores
    compiled = open_compiled(members, cpu, graph, want_scores=True)
    out = compiled.score(ids, images, compiled.timings)
    diff = float(np.abs(out.scores - scores).max())
    labels = decode(scores, options.allow_background)
    if diff > SCORE_TOLERANCE or not np.array_equal(out.labels, labels):
        raise EnsError(
            f"the compiled graph disagrees with the pipeline on random {shape[0]}x{shape[1]} images (fused "
            f"scores differ by up to {diff:.3g}, {int((out.labels != labels).sum())} labels differ); "
            "use --graph pipeline"
        )
    return diff


def describe(result: CompileResult) -> str:
    """One line about a written graph."""
    stamp = result.stamp
    return (
        f"wrote {result.path} ({len(stamp.members)} members {','.join(stamp.members)}, {stamp.tta} TTA, "
        f"{result.n_nodes} nodes, {result.size_bytes / 1e6:.1f} MB; fused scores within "
        f"{result.max_score_diff:.2g} of the pipeline on {CHECK_IMAGES} random "
        f"{result.check_shape[0]}x{result.check_shape[1]} images)"
    )
