"""Per-class coordinate search on a grid, and the two fits built on it: cleanup thresholds
(`min_area`) and decoding gains, each kept only where it raises the metric."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ensemble.data.metrics import confusion_matrix, get_metric
from ensemble.fitting.kernels import image_confusions
from ensemble.inference.cleanup import NO_TARGET, small_components


def class_grid_search(
    score: Callable[[np.ndarray], float],
    start: np.ndarray,
    grid: Sequence[float],
    first_class: int = 1,
    sweeps: int = 2,
) -> tuple[np.ndarray, float, float]:
    """Give each class from `first_class` on the grid value that maximises `score` with the others
    fixed, for up to `sweeps` passes; a change is kept only if it strictly raises the score, so the
    result never scores below `start`. Returns (values, start score, best score).

    >>> values, before, after = class_grid_search(lambda v: -abs(v - 3).sum(), np.zeros(3), (1, 3, 5))
    >>> values.tolist(), float(before), float(after)
    ([0.0, 3.0, 3.0], -9.0, -3.0)
    """
    values = np.array(start, copy=True)
    before = best = score(values)
    for _ in range(sweeps):
        changed = False
        for cls in range(first_class, len(values)):
            for value in grid:
                if value == values[cls]:
                    continue
                candidate = values.copy()
                candidate[cls] = value
                candidate_score = score(candidate)
                if candidate_score > best + 1e-9:
                    values, best, changed = candidate, candidate_score, True
        if not changed:
            break
    return values, before, best


AREA_GRID = (0, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class AreaFit:
    """Chosen (C,) min_area and the metric without cleanup and with it."""

    min_area: np.ndarray
    before: float
    after: float


def fit_min_area(
    labels: np.ndarray | list[np.ndarray],
    truth: np.ndarray | list[np.ndarray],
    n_classes: int,
    metric: str = "course",
    connectivity: int = 4,
    grid: tuple[int, ...] = AREA_GRID,
    sweeps: int = 2,
) -> AreaFit:
    """Coordinate search over classes 1..C-1: each class takes the grid value that maximises the
    metric with the others fixed; a change is kept only if it strictly raises the score, so the
    result is never below no cleanup (all zeros). Lists of label maps and truths (one per image
    size) are scored together.

    Cleanup decides each component from the input map alone, so its effect on the confusion matrix
    is a sum over classes: the components are found once and every candidate is scored from the
    per-class, per-area changes without running the cleanup again."""
    reduce = get_metric(metric).reduce
    pairs = list(zip(labels, truth, strict=True)) if isinstance(labels, list) else [(labels, truth)]
    base = sum(confusion_of(true, found, n_classes) for found, true in pairs)
    change = _area_changes(pairs, n_classes, connectivity, grid)

    def score(areas: np.ndarray) -> float:
        matrix = base + sum(change[c][int(a)] for c, a in enumerate(areas) if a)
        return reduce(matrix)

    areas, before, best = class_grid_search(score, np.zeros(n_classes, np.int64), grid, sweeps=sweeps)
    return AreaFit(areas, before, best)


def _area_changes(pairs, n_classes: int, connectivity: int, grid) -> list[dict[int, np.ndarray]]:
    """change[c][a]: how the (C, C) confusion matrix moves when class c alone is cleaned at area a."""
    below = max(grid, default=0)
    found, true, sizes, targets = [], [], [], []
    for labels, truth in pairs:
        size, target = small_components(labels, below, n_classes, connectivity)
        moved = target != NO_TARGET
        found.append(labels[moved]), true.append(np.asarray(truth)[moved].astype(np.int64))
        sizes.append(size[moved]), targets.append(target[moved].astype(np.int64))
    found, true = np.concatenate(found).astype(np.int64), np.concatenate(true)
    sizes, targets = np.concatenate(sizes), np.concatenate(targets)
    change: list[dict[int, np.ndarray]] = [{} for _ in range(n_classes)]
    for c in range(n_classes):
        mine = found == c
        for area in grid:
            chosen = mine & (sizes < area)
            gained = np.bincount(true[chosen] * n_classes + targets[chosen], minlength=n_classes**2)
            lost = np.bincount(true[chosen] * n_classes + c, minlength=n_classes**2)
            change[c][int(area)] = (gained - lost).reshape(n_classes, n_classes)
    return change


def fit_gains(
    score, n_classes: int, first_class: int = 1, sweeps: int = 2, grid=None
) -> tuple[np.ndarray, float]:
    """Per-class gains by coordinate search on a log grid; `score(gains)` returns the metric.
    A change is kept only when it raises the score, so the result never scores below all ones."""
    grid = grid if grid is not None else (0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
    gains, _, best = class_grid_search(score, np.ones(n_classes), grid, first_class, sweeps)
    return gains, best


def image_confusions_of(truth: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 (N, C, C) confusion matrix of each of N label maps, as `confusion_matrix` counts them
    (by a compiled loop over uint8 maps whose classes are in range; it raises for the others)."""
    truth, labels = np.asarray(truth), np.asarray(labels)
    if labels.shape != truth.shape or truth.ndim != 3 or not _small_labels(truth, labels, n_classes):
        return np.stack([confusion_matrix(t, p, n_classes) for t, p in zip(truth, labels, strict=True)])
    return image_confusions(truth, labels, n_classes)


def confusion_of(truth: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """`confusion_matrix(truth, labels, n_classes)`, by a compiled loop for (N, H, W) uint8 maps."""
    truth, labels = np.asarray(truth), np.asarray(labels)
    if labels.shape != truth.shape or truth.ndim != 3 or not _small_labels(truth, labels, n_classes):
        return confusion_matrix(truth, labels, n_classes)
    return image_confusions(truth, labels, n_classes).sum(axis=0)


def _small_labels(truth: np.ndarray, labels: np.ndarray, n_classes: int) -> bool:
    return all(a.dtype == np.uint8 and int(a.max(initial=0)) < n_classes for a in (truth, labels))
