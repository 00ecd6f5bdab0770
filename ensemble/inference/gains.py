"""Decoding gains: one multiplier per class applied to the fused scores before the argmax.

Members trained with cross-entropy rarely pick a rare class (big rock is 0.13% of the pixels), yet the
course metric weighs every class equally: a gain above 1 on that class trades a few pixels of the
common classes for a class IoU that would otherwise be 0. Gains are folded into the fusion weights, so
they cost nothing at prediction time.
"""

from __future__ import annotations

import numpy as np

from ensemble.errors import EnsError
from ensemble.fitting.grid import class_grid_search
from ensemble.optionvalues import key_values, parse_int, parse_number

MIN_GAIN, MAX_GAIN = 1e-6, 1e6


def parse_class_gain(text: str, n_classes: int) -> np.ndarray:
    """Parse `--class-gain 4=8,3=1.2` into a (C,) float64 array (unnamed classes keep 1).

    >>> parse_class_gain("4=8", 5).tolist()
    [1.0, 1.0, 1.0, 1.0, 8.0]
    """
    gains = np.ones(n_classes)
    for cls, value in key_values(text, "--class-gain", "4=8"):
        what = f"--class-gain entry '{cls}={value}':"
        index = parse_int(cls, f"{what} class", 0, n_classes - 1, "give CLASS=GAIN, e.g. --class-gain 4=8")
        gain = parse_number(value, f"{what} gain", "give CLASS=GAIN with GAIN > 0, e.g. --class-gain 4=8")
        if not MIN_GAIN <= gain <= MAX_GAIN:
            raise EnsError(
                f"--class-gain {cls}={value} is outside {MIN_GAIN:g}..{MAX_GAIN:g}; a gain multiplies "
                "the class score before the argmax, e.g. 4=8"
            )
        gains[index] = gain
    return gains


def gain_array(gain, n_classes: int) -> np.ndarray:
    """Check a gain vector (None: all ones); gains stay in MIN_GAIN..MAX_GAIN so that the float32
    fusion weights they scale neither overflow nor vanish."""
    try:
        gains = np.ones(n_classes) if gain is None else np.array(gain, np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EnsError(f"class gains {gain!r} are not numbers; give {n_classes} numbers > 0") from exc
    if gains.shape != (n_classes,) or not ((gains >= MIN_GAIN) & (gains <= MAX_GAIN)).all():
        raise EnsError(
            f"class gains must be {n_classes} numbers in {MIN_GAIN:g}..{MAX_GAIN:g}, "
            f"got {np.asarray(gain).tolist()}; e.g. 1 for every class but a rare one"
        )
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
