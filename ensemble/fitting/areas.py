"""Choosing the per-class cleanup `min_area` on labelled maps: a grid per class, kept only if it helps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.fitting.grid import class_grid_search
from ensemble.inference.cleanup import remove_small_regions
from ensemble.scoring.metrics import confusion_matrix, get_metric

AREA_GRID = (0, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class AreaFit:
    """Chosen (C,) min_area and the metric without cleanup and with it."""

    min_area: np.ndarray
    before: float
    after: float


def fit_min_area(
    labels: np.ndarray,
    truth: np.ndarray,
    n_classes: int,
    metric: str = "course",
    connectivity: int = 4,
    grid: tuple[int, ...] = AREA_GRID,
    sweeps: int = 2,
) -> AreaFit:
    """Coordinate search over classes 1..C-1: each class takes the grid value that maximises the
    metric with the others fixed; a change is kept only if it strictly raises the score, so the
    result is never below no cleanup (all zeros)."""
    reduce = get_metric(metric).reduce

    def score(areas: np.ndarray) -> float:
        cleaned = remove_small_regions(labels, areas, n_classes, connectivity) if areas.any() else labels
        return reduce(confusion_matrix(truth, cleaned, n_classes))

    areas, before, best = class_grid_search(score, np.zeros(n_classes, np.int64), grid, sweeps=sweeps)
    return AreaFit(areas, before, best)
