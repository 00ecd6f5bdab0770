"""Smooth random fields for synthetic images: value noise on coarse grids with a smoothstep fade.

Only gathers and element-wise arithmetic (no BLAS reductions), so a seed gives bit-identical
fields on every machine and thread count. Sizes are in pixels: a cell of 16 px means one random
value per 16 pixels, whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def grid_shape(height: int, width: int, cell: float) -> tuple[int, int]:
    """Nodes of a grid with `cell`-pixel spacing covering a height x width image (at least 2x2)."""
    return max(2, math.ceil(height / cell) + 1), max(2, math.ceil(width / cell) + 1)


def upsample(grid: np.ndarray, height: int, width: int, warp: float = 1.0) -> np.ndarray:
    """Interpolate (B, h, w) grids smoothly to (B, height, width) float32.

    `warp` > 1 stretches the rows near the bottom (features shrink towards the top, like the
    ground receding to a horizon); 1 keeps the spacing uniform.

    >>> upsample(np.zeros((1, 2, 2), np.float32), 3, 4).shape
    (1, 3, 4)
    """
    grid = np.asarray(grid, np.float32)
    return _along(_along(grid, width, 2, 1.0), height, 1, warp)


def field(
    rng: np.random.Generator,
    batch: int,
    height: int,
    width: int,
    octaves: Sequence[tuple[float, float]],
    warp: float = 1.0,
) -> np.ndarray:
    """Sum of value-noise octaves given as (cell size in px, amplitude), shape (B, height, width).

    The octaves are summed on the grid of the finest one and upsampled to full size once,
    so a field costs one full-resolution interpolation whatever its number of octaves.
    """
    finest = min(cell for cell, _ in octaves)
    fh, fw = grid_shape(height, width, finest)
    total = np.zeros((batch, fh, fw), np.float32)
    for cell, amplitude in octaves:
        h, w = grid_shape(height, width, cell)
        grid = rng.standard_normal((batch, h, w), dtype=np.float32) * np.float32(amplitude)
        total += grid if (h, w) == (fh, fw) else upsample(grid, fh, fw)
    return upsample(total, height, width, warp)


def profile(rng: np.random.Generator, batch: int, width: int, cell: float) -> np.ndarray:
    """A smooth random 1-D curve per image, (B, width), unit standard deviation at the nodes."""
    nodes = grid_shape(2, width, cell)[1]
    grid = rng.standard_normal((batch, 1, nodes), dtype=np.float32)
    return upsample(grid, 1, width)[:, 0]


def _along(a: np.ndarray, n: int, axis: int, warp: float) -> np.ndarray:
    """Resample axis `axis` of `a` to `n` samples with smoothstep-faded linear interpolation."""
    m = a.shape[axis]
    u = (np.arange(n, dtype=np.float64) + 0.5) / n
    if warp != 1.0:
        u = u**warp
    pos = u * (m - 1)
    lo = np.minimum(pos.astype(np.intp), m - 2)
    t = pos - lo
    t = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n
    below = np.take(a, lo, axis=axis)
    above = np.take(a, lo + 1, axis=axis)
    above -= below
    above *= t.reshape(shape)
    above += below
    return above
