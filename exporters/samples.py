"""Real images for the export checks: a few test (or training) images from the data file, or the
first images of an image folder (of its first size).

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
from ensemble.data.folder import open_folder
from ensemble.errors import EnsError
from ensemble.members.channels import check_channels, to_pixels

N_SAMPLES = 8
FALLBACK_SEED = 0
FALLBACK_HW = IMAGE_SHAPE


@dataclass(frozen=True)
class Samples:
    """uint8 (N, H, W) or (N, H, W, 3) images and where they came from."""

    images: np.ndarray
    origin: str
    channels: int = 1

    @property
    def hw(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def pixels(self) -> np.ndarray:
        """float32 (N, C_in, H, W) raw pixels, the member's input (grayscale replicated for RGB)."""
        return to_pixels(self.images, self.channels)


def data_hw(data: Path | None) -> tuple[int, int] | None:
    """Image size of the data file (of an image folder's first image), or None when it is absent."""
    if data is not None and data.is_dir():
        return open_folder(data).groups()[0].shape
    return open_data(data).image_shape if data is not None and data.is_file() else None


def load_samples(
    data: Path | None, allow_fallback: bool, hw: tuple[int, int] | None, channels: int = 1
) -> Samples:
    """Up to 8 images of the data file (test set first) or folder, or a seeded random batch if allowed."""
    if (data is None or not data.exists()) and allow_fallback:
        height, width = hw or FALLBACK_HW
        rng = np.random.default_rng(FALLBACK_SEED)
        images = np.stack([_random_images(rng, height, width) for _ in range(channels)], axis=-1)
        images = images[..., 0] if channels == 1 else images
        why = f"{data} absent" if data is not None else "no data file given"
        return Samples(images, f"{N_SAMPLES} seeded random images (seed {FALLBACK_SEED}); {why}", channels)
    if data.is_dir():
        return _folder_samples(data, hw, channels)
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
    return Samples(np.ascontiguousarray(images), origin, channels)


def _random_images(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.integers(0, 256, (N_SAMPLES, max(1, height // 8), max(1, width // 8)))
    smooth = np.kron(coarse, np.ones((8, 8)))[:, :height, :width]
    smooth = np.pad(smooth, ((0, 0), (0, height - smooth.shape[1]), (0, width - smooth.shape[2])), "edge")
    noise = rng.integers(-20, 21, (N_SAMPLES, height, width))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _folder_samples(data: Path, hw: tuple[int, int] | None, channels: int) -> Samples:
    """The first images of the folder that have the export size (its first size by default)."""
    folder = open_folder(data)
    groups = {group.shape: group for group in folder.groups()}
    shape = tuple(hw) if hw is not None else folder.groups()[0].shape
    if shape not in groups:
        raise EnsError(
            f"image folder {str(data)!r} holds no {shape[0]}x{shape[1]} images (it holds "
            f"{', '.join(f'{h}x{w}' for h, w in groups)}); pass matching --height/--width"
        )
    check_channels(channels, folder.channel_counts, gray_to_rgb=True)
    chosen = groups[shape].positions[:N_SAMPLES]
    images = next(folder.iter_images(chosen, channels, N_SAMPLES))
    return Samples(images, f"{len(images)} images of {data.name}/", channels)
