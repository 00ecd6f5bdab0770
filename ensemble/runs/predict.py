"""`ens predict` as a library call: resolve members, data and options, run, write the manifest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ensemble.compiled.engine import GraphChoice
from ensemble.compiled.stamp import graph_path
from ensemble.data.datasets import Dataset
from ensemble.data.sizes import describe_sizes
from ensemble.data.sources import Source, make_source
from ensemble.data.split import SplitSpec
from ensemble.errors import EnsError
from ensemble.files.atomic import atomic_files
from ensemble.files.outputs import refuse_overwrite, run_inputs
from ensemble.inference.loop import PredictResult
from ensemble.inference.manifest import build_manifest, manifest_json, manifest_path
from ensemble.inference.options import PredictOptions
from ensemble.inference.probstore import probs_files
from ensemble.members.ensemblefile import EnsembleSpec, resolve_ensemble
from ensemble.members.member import DEFAULT_STORE, Member
from ensemble.runs.assemble import assemble, assemble_probs
from ensemble.runs.engines import Engine, open_ensemble
from ensemble.runs.options import checked_options
from ensemble.runs.resumable import RunOptions, ShardedRun, compute_local, encoder, open_run
from ensemble.runs.rundir import remove_run_dir
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.formats import get_format
from ensemble.submission.textids import refuse_flat_text_ids

SUBMISSIONS = Path("submissions")


@dataclass(frozen=True)
class PredictRequest:
    """The user's choices, as given on the command line (text forms still unparsed)."""

    data: Dataset
    members: str | None = None
    store: Path = DEFAULT_STORE
    split: str = "test"
    split_spec: SplitSpec = SplitSpec()
    weights: str | None = None
    min_area: str | None = None
    class_gain: str | None = None
    connectivity: int | None = None
    tta: str | None = None
    ensemble: Path | None = None
    out: Path | None = None
    fmt: str = "rle"
    rle: RleConvention = DEFAULT_RLE
    save_probs: Path | None = None
    options: PredictOptions = PredictOptions()
    run: RunOptions = RunOptions()
    graph: str = "auto"


@dataclass(frozen=True)
class PredictOutcome:
    csv: Path
    manifest: Path
    result: PredictResult
    ensemble: Engine
    source: Source
    ensemble_file: Path | None = None
    reused_shards: int = 0


def default_out(now: dt.datetime | None = None) -> Path:
    """`submissions/<timestamp>.csv`."""
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return SUBMISSIONS / f"{stamp}.csv"


def request_options(
    request: PredictRequest, members: list[Member], spec: EnsembleSpec | None
) -> PredictOptions:
    """The command line's text options parsed, then resolved against the ensemble file."""
    return checked_options(
        members,
        spec,
        request.options,
        tta=request.tta,
        weights=request.weights,
        class_gain=request.class_gain,
        min_area=request.min_area,
        connectivity=request.connectivity,
    )


def output_paths(request: PredictRequest, out: Path) -> dict[str, Path | list[Path] | None]:
    """Every file a prediction writes, labelled for `refuse_overwrite`."""
    return {
        "--out": out,
        "the manifest of --out": manifest_path(out),
        "--save-probs": probs_files(request.save_probs) if request.save_probs is not None else None,
    }


def input_paths(request: PredictRequest, members: list[Member], spec_path: Path | None) -> dict:
    """Every file a prediction may read, labelled for `refuse_overwrite`: those of `run_inputs`, and
    the compiled graph of the ensemble file unless --graph pipeline rules it out."""
    inputs = run_inputs(request.data, members, spec_path, request.split_spec)
    if spec_path is not None and request.graph != GraphChoice.pipeline:
        inputs["the compiled graph"] = graph_path(spec_path)
    return inputs


def prepare(
    request: PredictRequest, out: Path | None = None, on_note: Callable[[str], None] | None = None
) -> tuple[Engine, Source, Path | None, EnsembleSpec | None]:
    """Load and check members, options and the image source; builds the sessions once.

    With `out`, the run's outputs are first checked against its inputs (nothing may overwrite the
    data, a member or its external data, the ensemble file, its compiled graph or --val-ids) before
    any session is built. `on_note` hears when `--runtime auto` times a member's runtimes (once per
    machine).
    """
    get_format(request.fmt, request.rle)
    members, spec, spec_path = resolve_ensemble(request.members, request.ensemble, request.store)
    if out is not None:
        refuse_overwrite(output_paths(request, out), input_paths(request, members, spec_path))
    options = request_options(request, members, spec)
    source = make_source(request.data, request.split, request.split_spec)
    check_layout(source, request.fmt, request.save_probs)
    ensemble = open_ensemble(
        members,
        options,
        source=source,
        ensemble_file=spec_path,
        graph=request.graph,
        want_scores=request.save_probs is not None,
        on_note=on_note,
    )
    return ensemble, source, spec_path, spec


def check_layout(source: Source, fmt: str, save_probs: Path | None) -> None:
    """Outputs that need one image size, or integer ids, refuse sources without them up front."""
    if source.image_shape is None and (fmt == "flat" or save_probs is not None):
        what = (
            "a flat CSV numbers the pixels of one size" if fmt == "flat" else "--save-probs keeps one array"
        )
        raise EnsError(
            f"the images have several sizes ({describe_sizes(source.groups)}) but {what}; "
            + ("write --format rle" if fmt == "flat" else "drop --save-probs, or predict one size at a time")
        )
    ids = source.ids()
    if fmt == "flat" and ids.dtype.kind == "U":
        refuse_flat_text_ids(ids.tolist())


def predict(
    request: PredictRequest,
    on_start: Callable[[Engine, Source], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> PredictOutcome:
    """Predict the requested split and write the CSV and its manifest; nothing partial on failure.

    The work is kept as shards in a run directory (`ensemble.runs`), so an interrupted run resumes
    where it stopped; the CSV (and with `save_probs` the probabilities, kept in the shards) is
    assembled from them. The CSV and the manifest are committed together: either both are replaced
    or neither.
    `on_note` receives one-line notes (timing the runtimes, resuming, damaged shards, shards kept
    after a failure).
    """
    out = request.out or default_out()
    ensemble, source, spec_path, spec = prepare(request, out, on_note)
    probs = request.save_probs is not None
    run_args = (ensemble, source, request.fmt, request.rle, spec_path, request.run, on_note)
    with open_run(*run_args, probs=probs) as state:
        if on_start:
            on_start(ensemble, source)
        if on_batch and state.done:
            on_batch(state.plan.count(state.done))
        try:
            result = _compute(state, request, ensemble, source, on_batch)
        except BaseException:
            if on_note and state.n_complete:
                on_note(
                    f"{state.n_complete} of {state.plan.n_shards} shards are complete in "
                    f"{str(state.directory)!r}; rerun the same command to resume"
                )
            raise
        with atomic_files(out, manifest_path(out)) as (csv_tmp, manifest_tmp):
            header = encoder(source, request.fmt, ensemble.n_classes, request.rle).header()
            confusion = assemble(csv_tmp, header, state.directory, state.expected)
            if request.save_probs is not None:
                assemble_probs(request.save_probs, state.directory, state.expected)
            result = replace(result, confusion=confusion)
            manifest = _manifest(request, out, csv_tmp, ensemble, source, result, spec_path, spec)
            manifest["run"] = {**state.describe(), "engine": request.run.engine}
            manifest_tmp.write_text(manifest_json(manifest), encoding="utf-8")
        if not request.run.keep:
            remove_run_dir(state.directory)
    return PredictOutcome(out, manifest_path(out), result, ensemble, source, spec_path, len(state.done))


def _compute(
    state: ShardedRun,
    request: PredictRequest,
    ensemble: Engine,
    source: Source,
    on_batch: Callable[[int], None] | None,
) -> PredictResult:
    """The shards left, computed by the requested engine."""
    if request.run.engine == "ray":
        from ensemble.runs.rayengine import compute_ray

        return compute_ray(state, ensemble, source, request.fmt, request.rle, request.run, on_batch)
    return compute_local(state, ensemble, source, request.fmt, request.rle, on_batch)


def _manifest(request, out, written, ensemble, source, result, spec_path, spec) -> dict:
    manifest = build_manifest(ensemble, source, result, out, request.fmt, written=written, rle=request.rle)
    manifest["ensemble_file"] = None if spec_path is None else str(spec_path)
    manifest["dropped_members"] = [] if spec is None else list(spec.dropped)
    manifest["graph"] = ensemble.manifest()
    if spec is not None:
        manifest["ensemble_evidence"] = {
            "metric": spec.metric,
            "dropped": list(spec.dropped),
            "fit": spec.fit,
        }
    if result.confusion is not None:
        manifest["val_confusion"] = np.asarray(result.confusion).tolist()
    return manifest
