"""Per-class coordinate search on a grid, shared by the cleanup thresholds and the decoding gains."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


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
