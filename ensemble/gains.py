"""Decoding gains: one multiplier per class applied to the fused scores before the argmax.

Members trained with cross-entropy rarely pick a rare class (big rock is 0.13% of the pixels), yet the
course metric weighs every class equally: a gain above 1 on that class trades a few pixels of the
common classes for a class IoU that would otherwise be 0. Gains are folded into the fusion weights, so
they cost nothing at prediction time.
"""

from __future__ import annotations

import numpy as np

from ensemble.errors import EnsError
from ensemble.gridsearch import class_grid_search


def parse_class_gain(text: str, n_classes: int) -> np.ndarray:
    """Parse `--class-gain 4=8,3=1.2` into a (C,) float64 array (unnamed classes keep 1).

    >>> parse_class_gain("4=8", 5).tolist()
    [1.0, 1.0, 1.0, 1.0, 8.0]
    """
    gains = np.ones(n_classes)
    for part in filter(None, (p.strip() for p in text.split(","))):
        cls, sep, value = part.partition("=")
        try:
            index, gain = int(cls), float(value) if sep else float("nan")
        except ValueError:
            index, gain = -1, float("nan")
        if not sep or not np.isfinite(gain) or gain <= 0:
            raise EnsError(f"--class-gain entry {part!r} is not CLASS=GAIN with GAIN > 0; e.g. 4=8")
        if not 0 <= index < n_classes:
            raise EnsError(f"--class-gain names class {index}; classes are 0..{n_classes - 1}")
        gains[index] = gain
    return gains


def gain_array(gain, n_classes: int) -> np.ndarray:
    """Check a gain vector (None: all ones)."""
    gains = np.ones(n_classes) if gain is None else np.asarray(gain, np.float64)
    if gains.shape != (n_classes,) or not np.isfinite(gains).all() or (gains <= 0).any():
        raise EnsError(f"class gains must be {n_classes} finite values > 0, got {np.asarray(gain).tolist()}")
    return gains


def scaled_weights(weights: np.ndarray, gain) -> np.ndarray:
    """Normalised (M, C) fusion weights with column c multiplied by gain[c], as float32."""
    gains = gain_array(gain, weights.shape[1])
    return (np.asarray(weights, np.float64) * gains[None, :]).astype(np.float32)


def fit_gains(
    score, n_classes: int, first_class: int = 1, sweeps: int = 2, grid=None
) -> tuple[np.ndarray, float]:
    """Per-class gains by coordinate search on a log grid; `score(gains)` returns the metric.
    A change is kept only when it raises the score, so the result never scores below all ones."""
    grid = grid if grid is not None else (0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
    gains, _, best = class_grid_search(score, np.ones(n_classes), grid, first_class, sweeps)
    return gains, best
