"""Real images for the export checks: a few test (or training) images from the data file.

Parity measured on real images catches what random noise hides (saturated softmax, value
ranges). Only when the default data file is absent is a seeded random batch used, and that
fallback is recorded in the member's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.course import IMAGE_SHAPE
from ensemble.data.datafile import open_data
from ensemble.errors import EnsError

N_SAMPLES = 8
FALLBACK_SEED = 0
FALLBACK_HW = IMAGE_SHAPE


@dataclass(frozen=True)
class Samples:
    """uint8 (N, H, W) images and where they came from."""

    images: np.ndarray
    origin: str

    @property
    def hw(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def pixels(self) -> np.ndarray:
        """float32 (N, 1, H, W) raw pixels, the member's input."""
        return self.images[:, None].astype(np.float32)


def data_hw(data: Path | None) -> tuple[int, int] | None:
    """Image size of the data file, or None when it is absent."""
    return open_data(data).image_shape if data is not None and data.is_file() else None


def load_samples(data: Path | None, allow_fallback: bool, hw: tuple[int, int] | None) -> Samples:
    """Up to 8 images of the data file (test set first), or a seeded random batch if allowed."""
    if (data is None or not data.is_file()) and allow_fallback:
        height, width = hw or FALLBACK_HW
        rng = np.random.default_rng(FALLBACK_SEED)
        coarse = rng.integers(0, 256, (N_SAMPLES, max(1, height // 8), max(1, width // 8)))
        smooth = np.kron(coarse, np.ones((8, 8)))[:, :height, :width]
        smooth = np.pad(smooth, ((0, 0), (0, height - smooth.shape[1]), (0, width - smooth.shape[2])), "edge")
        noise = rng.integers(-20, 21, (N_SAMPLES, height, width))
        images = np.clip(smooth + noise, 0, 255).astype(np.uint8)
        why = f"{data} absent" if data is not None else "no data file given"
        return Samples(images, f"{N_SAMPLES} seeded random images (seed {FALLBACK_SEED}); {why}")
    handle = open_data(data)
    if hw is not None and handle.image_shape != tuple(hw):
        raise EnsError(
            f"data file {str(data)!r} holds {handle.height}x{handle.width} images but the export "
            f"size is {hw[0]}x{hw[1]}; pass --data with {hw[0]}x{hw[1]} images or matching --height/--width"
        )
    if handle.has_test and handle.n_test:
        images = next(handle.iter_test_images(N_SAMPLES))
        origin = f"{len(images)} test images of {data.name}"
    else:
        images = handle.load_train()[0][:N_SAMPLES]
        origin = f"{len(images)} training images of {data.name}"
    if len(images) == 0:
        raise EnsError(f"data file {str(data)!r} holds no images; pass --data with some images")
    return Samples(np.ascontiguousarray(images), origin)
