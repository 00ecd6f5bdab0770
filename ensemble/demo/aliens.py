"""The 'alien' outliers of the Mars data: cartoon faces pasted over terrain, all sharing one mask.

The course training set holds 110 such images whose masks are byte-identical and unrelated to
the picture; the synthetic data reproduces them so outlier detection has something real to find.
"""

from __future__ import annotations

import numpy as np

from ensemble.demo.terrain import render_scenes


def render_aliens(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """Return `batch` uint8 (H, W) images of a bright alien head with dark slanted eyes."""
    image = render_scenes(rng, batch, height, width).images.astype(np.float32)
    rows = np.arange(height, dtype=np.float32)[None, :, None]
    cols = np.arange(width, dtype=np.float32)[None, None, :]

    def per_image(low, high):
        return rng.uniform(low, high, batch).astype(np.float32)[:, None, None]

    cy, cx = per_image(0.42, 0.62) * height, per_image(0.2, 0.8) * width
    ry = per_image(0.3, 0.42) * height
    rx = ry * per_image(0.65, 0.85)
    dy, dx = (rows - cy) / ry, (cols - cx) / rx
    head = np.square(dy) + np.square(dx) < 1.0
    face = per_image(185.0, 235.0) - 25.0 * dy - per_image(-15.0, 15.0) * dx
    image = np.where(head, face, image)

    antennae = (np.abs(np.abs(dx) - 0.35) < 0.6 / rx) & (dy > -1.35) & (dy < -0.9)
    image[antennae] = 200.0
    for side in (-1.0, 1.0):
        u, v = dx - side * 0.42, dy + 0.1
        slant = side * 0.5
        along = u * np.cos(slant) + v * np.sin(slant)
        across = -u * np.sin(slant) + v * np.cos(slant)
        image[np.square(along / 0.3) + np.square(across / 0.16) < 1.0] = 12.0
    image[(np.abs(dy - 0.5) < 0.7 / ry) & (np.abs(dx) < 0.25)] = 40.0

    image += rng.normal(0.0, 3.0, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
