"""The Python API for notebooks: members and numpy arrays in; labels, probabilities, scores and CSVs
out, with no data file needed. The `ens` commands run the same pieces on files.

>>> import ensemble as ens
>>> model = ens.load_ensemble(store="models")            # members, weights, gains, cleanup of ens fit
>>> images = np.full((2, 64, 128), 120, np.uint8)          # (N, H, W) gray or (N, H, W, 3) RGB, 0..255
>>> labels = ens.predict(model, images)
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
from pathlib import Path

import numpy as np

from ensemble.apiargs import (
    batch_size_arg,
    device_arg,
    flag,
    fusion_args,
    member_args,
    path_or_none,
    predict_options,
    tta_arg,
)
from ensemble.data.datafile import as_array, as_labels, as_pixels
from ensemble.data.metrics import confusion_matrix, get_metric, iou_per_class
from ensemble.data.tta import get_views
from ensemble.errors import EnsError
from ensemble.files.atomic import write_text
from ensemble.files.outputs import refuse_overwrite, run_inputs
from ensemble.fitting.fit import fit_ensemble
from ensemble.fitting.job import build_spec
from ensemble.fitting.settings import FitSettings, check_labelled, check_settings
from ensemble.inference.loop import label_batches
from ensemble.inference.options import DEFAULT_BATCH, resolve_options
from ensemble.inference.runner import member_probs
from ensemble.inference.scorer import Scorer
from ensemble.members.channels import check_channels, to_pixels
from ensemble.members.ensemblefile import EnsembleSpec, read_spec, resolve_ensemble
from ensemble.members.member import DEFAULT_STORE, Member, load_member
from ensemble.members.session import build_session
from ensemble.members.store import check_compatible, check_distinct, resolve_members
from ensemble.optionvalues import check_n_classes, check_path
from ensemble.runs.engines import Engine, open_ensemble

MemberList = Sequence[Member | str | os.PathLike] | str | None


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
    weights: np.ndarray | Sequence[float] | None = None,
    class_gain: np.ndarray | Sequence[float] | None = None,
    min_area: np.ndarray | Sequence[int] | int | None = None,
    connectivity: int | None = None,
    allow_background: bool = False,
    batch_size: int = DEFAULT_BATCH,
    device: str = "auto",
    threads: int | None = None,
    gray_to_rgb: bool = False,
) -> Engine:
    """Members with live ONNX Runtime sessions and their fusion, decoding and cleanup settings.

    Like `ens predict`: an explicit setting wins, then the ensemble file (`ensemble_file`, or
    `<store>/ensemble.json` when `members` is None), then the defaults.
    """
    members, store = member_args(members), check_path(store, "store")
    ensemble_file = path_or_none(ensemble_file, "ensemble_file")
    base = predict_options(allow_background, batch_size, device, threads, gray_to_rgb)
    tta = tta_arg(tta)
    if members is None or isinstance(members, str):
        found, spec, _ = resolve_ensemble(members, ensemble_file, store)
    else:
        found = load_members(members, store)
        spec = None
        if ensemble_file is not None:
            spec = read_spec(ensemble_file)
            spec.check_members(found, ensemble_file)
    fusion = fusion_args(found, weights, class_gain, min_area, connectivity)
    return open_ensemble(found, resolve_options(found, spec, base, tta=tta, **fusion))


def predict(
    ensemble: Scorer, images: np.ndarray, probabilities: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W) labels of images with 0..255 pixels, batch by batch: grayscale (N, H, W), or
    RGB as (N, H, W, 3) (channels last, as PIL and OpenCV give them) or (N, 3, H, W) (a 4-D array
    whose last axis is not 3 is read as channels first), in R, G, B order.

    With `probabilities`, also the fused float32 (N, C, H, W) probabilities (class gains divided out).
    """
    if not isinstance(ensemble, Scorer):
        raise EnsError(
            f"predict takes the Ensemble of load_ensemble(...), not {type(ensemble).__name__}; "
            "e.g. predict(load_ensemble(store='models'), images)"
        )
    probabilities = flag(probabilities, "probabilities")
    pixels = as_images(images)
    check_channels(ensemble.channels, {1 if pixels.ndim == 3 else 3}, ensemble.options.gray_to_rgb)
    ensemble.check_image_shape(pixels.shape[1:3])
    labels = np.empty(pixels.shape[:3], np.uint8)
    probs = (
        np.empty((len(pixels), ensemble.n_classes, *pixels.shape[1:3]), np.float32) if probabilities else None
    )
    step = ensemble.worker_batch
    starts = range(0, len(pixels), step)
    batches = ((ids, pixels[ids]) for ids in (np.arange(i, min(i + step, len(pixels))) for i in starts))

    def sink(ids: np.ndarray, batch_labels: np.ndarray, batch_probs: np.ndarray | None) -> None:
        labels[ids] = batch_labels
        if probs is not None:
            probs[ids] = batch_probs

    label_batches(ensemble, batches, sink, probs=probabilities)
    return (labels, probs) if probabilities else labels


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
) -> EnsembleSpec:
    """Fit weights, class gains and cleanup on labelled arrays, as `ens fit` does on its split.

    Returns the ensemble spec (and writes it to `out` when given) for `load_ensemble(ensemble_file=...)`.
    """
    settings = FitSettings() if settings is None else settings
    out, device, batch_size = path_or_none(out, "out"), device_arg(device), batch_size_arg(batch_size)
    tta = tta_arg(tta, "flip")
    views = get_views(tta)
    found = load_members(members, store)
    refuse_overwrite({"out=": out}, run_inputs(None, found))
    pixels = as_images(images)
    check_channels(found[0].channels, {1 if pixels.ndim == 3 else 3}, flag(gray_to_rgb, "gray_to_rgb"))
    truth = as_labels(as_array(masks, "masks"), "masks", found[0].n_classes)
    if truth.shape != pixels.shape[:3]:
        raise EnsError(f"masks have shape {truth.shape} but images {pixels.shape}; give one mask per image")
    check_settings(settings, len(pixels))
    check_labelled([truth])
    probs = []
    for member in found:
        runner = build_session(member, device)
        parts = [
            member_probs(runner, to_pixels(pixels[start : start + batch_size], member.channels), views)
            for start in range(0, len(pixels), batch_size)
        ]
        probs.append(np.concatenate(parts))
    result = fit_ensemble(probs, truth, settings)
    spec = build_spec(found, tta, settings, result, {"n_images": len(pixels), "source": "arrays"})
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


def as_images(images) -> np.ndarray:
    """Checked uint8 images: grayscale (N, H, W), or RGB (N, H, W, 3) from (N, H, W, 3) or (N, 3, H, W)
    (a 4-D array is channels last when its last axis is 1 or 3, else channels first)."""
    array = as_array(images, "images")
    if array.ndim == 4 and array.shape[3] not in (1, 3) and array.shape[1] in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 4:
        return as_pixels(array, "images")
    if array.shape[3] != 3:
        raise EnsError(
            f"images are a {array.dtype} array of shape {array.shape}; expected (N, H, W) grayscale, or "
            "(N, H, W, 3) or (N, 3, H, W) RGB"
        )
    flat = as_pixels(array.reshape(array.shape[0], array.shape[1], -1), "images")
    return flat.reshape(array.shape)


def _load_one(member: str | os.PathLike, store: Path) -> Member:
    text = str(member)
    return load_member(Path(text)) if text.endswith(".onnx") else resolve_members([text], store)[0]
