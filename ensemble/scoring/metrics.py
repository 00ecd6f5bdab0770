"""Segmentation scores in two stages: confusion statistics, then named reductions.

The default reduction reproduces the course scorer, `MeanIntersectionOverUnion(labels_to_exclude=[0])`,
a Keras `MeanIoU` whose sample weight is 0 wherever the TRUE label is 0: the confusion matrix is
accumulated over the remaining pixels of the whole set, IoU = TP / (TP + FP + FN) per class, and the
mean runs over every class (class 0 included) whose denominator is non-zero. Predicting 0 on a
labelled pixel therefore adds class 0 with IoU 0 to the average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ensemble.errors import EnsError
from ensemble.optionvalues import short_repr

_PIXELS_PER_CHUNK = 1 << 22


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Return the (C, C) int64 confusion matrix, rows = true class, columns = predicted class.

    >>> confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3).tolist()
    [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    if truth.shape != pred.shape:
        raise EnsError(f"truth has {truth.size} pixels but prediction has {pred.size}; they must match")
    matrix = np.zeros(n_classes * n_classes, np.int64)
    for start in range(0, truth.size, _PIXELS_PER_CHUNK):
        t = truth[start : start + _PIXELS_PER_CHUNK].astype(np.intp)
        p = pred[start : start + _PIXELS_PER_CHUNK].astype(np.intp)
        for name, values in (("truth", t), ("prediction", p)):
            if values.size and (values.min() < 0 or values.max() >= n_classes):
                bad = values[(values < 0) | (values >= n_classes)][0]
                raise EnsError(f"{name} holds label {bad}; allowed labels are 0..{n_classes - 1}")
        matrix += np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return matrix.reshape(n_classes, n_classes)


class ConfusionAccumulator:
    """Streaming confusion matrix: `update` batch by batch, read `matrix` at the end."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.matrix = np.zeros((n_classes, n_classes), np.int64)

    def update(self, truth: np.ndarray, pred: np.ndarray) -> None:
        self.matrix += confusion_matrix(truth, pred, self.n_classes)


def iou_per_class(matrix: np.ndarray, ignore_true: tuple[int, ...] = (0,)) -> np.ndarray:
    """IoU of every class after dropping pixels whose true label is in `ignore_true`; NaN where
    the class never occurs in truth or prediction (zero denominator)."""
    matrix = _drop_true(matrix, ignore_true)
    tp = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, tp / np.maximum(denominator, 1), np.nan)


def course_miou(matrix: np.ndarray) -> float:
    """The course scorer: drop true-0 pixels, mean IoU over all classes with a non-zero denominator."""
    iou = iou_per_class(matrix, ignore_true=(0,))
    valid = ~np.isnan(iou)
    return float(iou[valid].mean()) if valid.any() else 0.0


def plain_miou(matrix: np.ndarray) -> float:
    """Conventional mIoU with 0 as ignore index: drop true-0 pixels, average classes 1..C-1 present."""
    iou = iou_per_class(matrix, ignore_true=(0,))[1:]
    valid = ~np.isnan(iou)
    return float(iou[valid].mean()) if valid.any() else 0.0


def _drop_true(matrix: np.ndarray, ignore_true: tuple[int, ...]) -> np.ndarray:
    matrix = np.array(matrix, dtype=np.int64, copy=True)
    matrix[list(ignore_true), :] = 0
    return matrix


@dataclass(frozen=True)
class Metric:
    """A named reduction of a confusion matrix to one score."""

    name: str
    reduce: Callable[[np.ndarray], float]
    description: str


METRICS: dict[str, Metric] = {
    "course": Metric(
        "course", course_miou, "course MeanIoU: true-0 pixels dropped, class 0 counted if predicted"
    ),
    "miou": Metric("miou", plain_miou, "mean IoU over classes 1..C-1, true-0 pixels dropped"),
}


def get_metric(name: str) -> Metric:
    """Look a metric up by name; an unknown name lists the valid ones."""
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise EnsError(
            f"unknown metric {short_repr(name)}; choose one of {', '.join(list_metrics())}"
        ) from None


def list_metrics() -> list[str]:
    return sorted(METRICS)


def score(truth: np.ndarray, pred: np.ndarray, n_classes: int, metric: str = "course") -> float:
    """One-call convenience: confusion matrix, then the named reduction."""
    return get_metric(metric).reduce(confusion_matrix(truth, pred, n_classes))
