"""The Python API for notebooks: members and numpy arrays in; labels, probabilities, scores and CSVs
out, with no data file needed. The `ens` commands run the same pieces on files: the same checked
options, engine, runtime choice, batch loop, probability cache and fit.

>>> import ensemble as ens
>>> model = ens.load_ensemble(store="models")            # members, weights, gains, cleanup of ens fit
>>> images = np.full((2, 64, 128), 120, np.uint8)          # (N, H, W) gray or (N, H, W, 3) RGB, 0..255
>>> labels = ens.predict(model, images).labels
>>> labels.shape, labels.dtype, int(labels.min()) >= 1     # class 0 is never predicted by default
((2, 64, 128), dtype('uint8'), True)
>>> path = __import__("tempfile").mkdtemp() + "/submission.csv"
>>> ens.write_submission(path, [0, 1], labels, "rle", model.n_classes)
>>> ens.read_submission(path, (64, 128), model.n_classes)[0].tolist()
[0, 1]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.apiargs import as_images, member_args, path_or_none
from ensemble.data.arraysource import ArraySource, array_source
from ensemble.data.datafile import as_array, as_labels
from ensemble.data.metrics import confusion_matrix, get_metric, iou_per_class
from ensemble.errors import EnsError
from ensemble.files.atomic import write_text
from ensemble.files.outputs import refuse_cache_folder, refuse_overwrite, run_inputs
from ensemble.fitting.cache import ProbCache
from ensemble.fitting.job import fit_source
from ensemble.fitting.settings import FitSettings
from ensemble.inference.loop import label_batches
from ensemble.inference.options import DEFAULT_BATCH, PredictOptions
from ensemble.members.ensemblefile import EnsembleSpec, read_spec, resolve_ensemble
from ensemble.members.member import DEFAULT_STORE, Member, load_member
from ensemble.members.store import check_compatible, check_distinct, resolve_members
from ensemble.optionvalues import check_n_classes, check_path
from ensemble.runs.engines import open_ensemble
from ensemble.runs.options import checked_options, flag, graph_arg, run_options, tta_arg
from ensemble.runtimes.kinds import RuntimeChoice

MemberList = Sequence[Member | str | os.PathLike] | str | None


@dataclass(frozen=True)
class Prediction:
    """What `predict` returns: uint8 (N, H, W) `labels`, and the fused float32 (N, C, H, W)
    probabilities `probs` (class gains divided out) when asked for, else None."""

    labels: np.ndarray
    probs: np.ndarray | None = None


class LoadedEnsemble:
    """The handle `load_ensemble` returns and `predict` takes: the members and the checked options
    of a prediction. Opaque: read `n_classes`, `member_names`, `options`, `ensemble_file`, `graph`
    and, once `predict` has run, `runtimes` and `warnings`; nothing else is part of the API.

    The sessions open on the first `predict` call, with its images as the run's images (as
    `ens predict` opens them once it has its data): the runtime choice of `runtime="auto"` is made
    there. Later calls reuse them; a call with images of another size or kind opens them again.
    """

    def __init__(self, members, options, ensemble_file, graph) -> None:
        self._members, self._options = list(members), options
        self._ensemble_file, self._graph = ensemble_file, graph
        self._engine, self._opened_for, self._scores = None, None, False

    @property
    def n_classes(self) -> int:
        return self._members[0].n_classes

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self._members)

    @property
    def options(self) -> PredictOptions:
        """Everything that decides the labels, resolved as `ens predict` resolves its options."""
        return self._options

    @property
    def ensemble_file(self) -> Path | None:
        return self._ensemble_file

    @property
    def graph(self) -> str:
        return self._graph

    @property
    def runtimes(self) -> tuple[RuntimeChoice, ...]:
        """Each member's runtime and why, as the manifest of `ens predict` records them (empty before
        the first `predict`)."""
        return () if self._engine is None else tuple(self._engine.choices)

    @property
    def warnings(self) -> list[str]:
        """Provider fallbacks, thread caps, runtime and engine notes of the open sessions."""
        return [] if self._engine is None else list(self._engine.warnings)

    def __repr__(self) -> str:
        return f"<ensemble of {', '.join(self.member_names)}, {self.n_classes} classes>"

    def _engine_for(self, source: ArraySource, scores: bool):
        """The engine for the images of `source`, opened (again) when they differ in size or kind from
        the last call's, or when probabilities are asked of an engine opened without them."""
        wanted = (source.image_shape, source.channels)
        if self._engine is None or self._opened_for != wanted or (scores and not self._scores):
            self._scores = self._scores or scores
            self._engine = None
            self._engine = open_ensemble(
                self._members,
                self._options,
                source=source,
                ensemble_file=self._ensemble_file,
                graph=self._graph,
                want_scores=self._scores,
            )
            self._opened_for = wanted
        return self._engine


def load_members(members: MemberList = None, store: str | os.PathLike = DEFAULT_STORE) -> list[Member]:
    """Members by store name, .onnx path or Member, checked to fuse together; None: the whole store."""
    members, store = member_args(members), check_path(store, "store")
    if members is None or isinstance(members, str):
        return resolve_members(members, store)
    loaded = [m if isinstance(m, Member) else _load_one(m, store) for m in members]
    check_distinct(loaded)
    check_compatible(loaded)
    return loaded


def load_ensemble(
    members: MemberList = None,
    ensemble_file: str | os.PathLike | None = None,
    store: str | os.PathLike = DEFAULT_STORE,
    *,
    tta: str | None = None,
    weights: np.ndarray | Sequence[float] | str | None = None,
    class_gain: np.ndarray | Sequence[float] | str | None = None,
    min_area: np.ndarray | Sequence[int] | int | str | None = None,
    connectivity: int | None = None,
    allow_background: bool = False,
    batch_size: int = DEFAULT_BATCH,
    device: str = "auto",
    threads: int | None = None,
    gray_to_rgb: bool = False,
    runtime: str = "auto",
    workers: int | None = None,
    graph: str = "auto",
) -> LoadedEnsemble:
    """The members and the options of a prediction, checked and resolved as `ens predict` does it: an
    explicit setting wins, then the ensemble file (`ensemble_file`, or `<store>/ensemble.json` when
    `members` is None), then the defaults. Each keyword is the `ens predict` option of that name
    (`runtime`, `workers`, `graph` included) and is refused with that option's message.

    `runtime="auto"` picks each member's runtime as `ens predict` does, on the images of the first
    `predict` call: the choice cached on this machine for that batch shape (runtimes.json in the
    cache dir, written by `ens export`, `ens members --bench` or any run of 1,024+ images), else
    timed now when the call holds 1,024 images or more, else ONNX Runtime as exported (`untimed` in
    the handle's `runtimes`).

    Returns an opaque handle for `predict` (see `LoadedEnsemble`).
    """
    members, store = member_args(members), check_path(store, "store")
    ensemble_file = path_or_none(ensemble_file, "ensemble_file")
    run = run_options(
        allow_background=allow_background,
        batch_size=batch_size,
        device=device,
        threads=threads,
        gray_to_rgb=gray_to_rgb,
        workers=workers,
        runtime=runtime,
    )
    graph = graph_arg(graph)
    if members is None or isinstance(members, str):
        found, spec, ensemble_file = resolve_ensemble(members, ensemble_file, store)
    else:
        found = load_members(members, store)
        spec = None
        if ensemble_file is not None:
            spec = read_spec(ensemble_file)
            spec.check_members(found, ensemble_file)
    options = checked_options(
        found,
        spec,
        run,
        tta=tta,
        weights=weights,
        class_gain=class_gain,
        min_area=min_area,
        connectivity=connectivity,
    )
    return LoadedEnsemble(found, options, ensemble_file, graph)


def predict(ensemble: LoadedEnsemble, images: np.ndarray, probabilities: bool = False) -> Prediction:
    """The labels of images with 0..255 pixels, as `ens predict` computes them, batch by batch:
    grayscale (N, H, W), or RGB as (N, H, W, 3) (channels last, as PIL and OpenCV give them) or
    (N, 3, H, W) (a 4-D array whose last axis is not 3 is read as channels first), in R, G, B order.

    Returns a `Prediction`: `.labels` uint8 (N, H, W), and with `probabilities` also `.probs`, the
    fused float32 (N, C, H, W) probabilities (class gains divided out).
    """
    if not isinstance(ensemble, LoadedEnsemble):
        raise EnsError(
            f"predict takes the ensemble of load_ensemble(...), not {type(ensemble).__name__}; "
            "e.g. predict(load_ensemble(store='models'), images)"
        )
    probabilities = flag(probabilities, "probabilities")
    source = array_source(as_images(images))
    if source.n_images == 0:
        empty = np.zeros((0, ensemble.n_classes, *source.image_shape), np.float32)
        return Prediction(np.zeros((0, *source.image_shape), np.uint8), empty if probabilities else None)
    engine = ensemble._engine_for(source, probabilities)
    labels = np.empty(source.images.shape[:3], np.uint8)
    shape = (source.n_images, ensemble.n_classes, *source.image_shape)
    probs = np.empty(shape, np.float32) if probabilities else None

    def sink(ids: np.ndarray, batch_labels: np.ndarray, batch_probs: np.ndarray | None) -> None:
        labels[ids] = batch_labels
        if probs is not None:
            probs[ids] = batch_probs

    batches = source.batches(engine.worker_batch, engine.description.channels)
    label_batches(engine, batches, sink, probs=probabilities)
    return Prediction(labels, probs)


def fit(
    members: MemberList,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    tta: str = "flip",
    settings: FitSettings | None = None,
    out: str | os.PathLike | None = None,
    store: str | os.PathLike = DEFAULT_STORE,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH,
    gray_to_rgb: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> EnsembleSpec:
    """Fit weights, class gains and cleanup on labelled arrays, as `ens fit` does on its split: the
    same float16 probability cache (`cache_dir`, default `$ENS_CACHE` else .cache/ens) and search.

    Returns the ensemble spec (and writes it to `out` when given) for `load_ensemble(ensemble_file=...)`.
    """
    settings = FitSettings() if settings is None else settings
    out, cache_dir = path_or_none(out, "out"), path_or_none(cache_dir, "cache_dir")
    run = run_options(device=device, batch_size=batch_size, gray_to_rgb=gray_to_rgb)
    tta = tta_arg(tta, "flip")
    found = load_members(members, store)
    inputs = run_inputs(None, found)
    refuse_overwrite({"out=": out}, inputs)
    pixels = as_images(images)
    truth = as_labels(as_array(masks, "masks"), "masks", found[0].n_classes)
    if truth.shape != pixels.shape[:3]:
        raise EnsError(f"masks have shape {truth.shape} but images {pixels.shape}; give one mask per image")
    source = array_source(pixels, truth, split="val")
    cache = ProbCache(source, cache_dir, run.device, None, run.batch_size)
    refuse_cache_folder("cache_dir=", cache.directory, inputs)
    spec, _ = fit_source(found, source, cache, tta, settings, run.gray_to_rgb)
    if out is not None:
        write_text(out, spec.to_json())
    return spec


def score(labels: np.ndarray, masks: np.ndarray, n_classes: int, metric: str = "course"):
    """Per-class IoU of predicted `labels` against `masks` as a pandas DataFrame (one row per class:
    iou, true and predicted pixels); `frame.attrs["score"]` holds the metric (course mIoU by default)."""
    import pandas as pd

    n_classes, metric = check_n_classes(n_classes, "n_classes"), get_metric(metric).name
    truth = as_labels(as_array(masks, "masks"), "masks", n_classes)
    pred = as_labels(as_array(labels, "labels"), "labels", n_classes)
    if truth.shape != pred.shape:
        raise EnsError(f"labels have shape {pred.shape} but masks {truth.shape}; give one label map per mask")
    matrix = confusion_matrix(truth, pred, n_classes)
    frame = pd.DataFrame(
        {"iou": iou_per_class(matrix), "true_pixels": matrix.sum(1), "predicted_pixels": matrix.sum(0)},
        index=pd.RangeIndex(n_classes, name="class"),
    )
    frame.attrs["metric"] = metric
    frame.attrs["score"] = get_metric(metric).reduce(matrix)
    return frame


def _load_one(member: str | os.PathLike, store: Path) -> Member:
    text = str(member)
    return load_member(Path(text)) if text.endswith(".onnx") else resolve_members([text], store)[0]
