"""Which images may feed which members: grayscale members take grayscale images; RGB members take
RGB images, and grayscale ones only when asked (`--gray-to-rgb` replicates the channel); and
`to_pixels`, uint8 images turned into the members' input."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ensemble.errors import EnsError


def check_channels(member_channels: int, image_channels: Iterable[int], gray_to_rgb: bool = False) -> None:
    """Refuse images whose channel count the members cannot take as they are.

    >>> check_channels(3, {1, 3}, gray_to_rgb=True)
    >>> check_channels(1, {3})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ensemble.errors.EnsError: the images are RGB but the members take 1 channel (grayscale); ...
    """
    found = set(image_channels)
    if member_channels == 1 and 3 in found:
        what = "RGB" if found == {3} else "partly RGB"
        raise EnsError(
            f"the images are {what} but the members take 1 channel (grayscale); use members exported "
            "with --channels 3, or grayscale images"
        )
    if member_channels == 3 and 1 in found and not gray_to_rgb:
        what = "grayscale" if found == {1} else "partly grayscale"
        raise EnsError(
            f"the images are {what} but the members take 3 channels (RGB); pass --gray-to-rgb "
            "(gray_to_rgb=True in Python) to replicate the gray channel into R, G and B, or use grayscale "
            "members"
        )


def to_pixels(images: np.ndarray, channels: int = 1) -> np.ndarray:
    """uint8 images -> the contract input, float32 (B, C_in, H, W) raw 0..255: grayscale (B, H, W)
    images give 1 channel, or 3 copies of it; RGB (B, H, W, 3) images give 3 channels.

    >>> rgb, gray = np.zeros((2, 4, 5, 3), np.uint8), np.zeros((2, 4, 5), np.uint8)
    >>> to_pixels(rgb, 3).shape, to_pixels(gray, 3).shape, to_pixels(gray).shape
    ((2, 3, 4, 5), (2, 3, 4, 5), (2, 1, 4, 5))
    """
    if images.ndim == 3:
        pixels = images.astype(np.float32)[:, None]
        return pixels if channels == 1 else np.repeat(pixels, channels, axis=1)
    if images.shape[3] != channels:
        raise EnsError(
            f"images with {images.shape[3]} channels cannot feed members that take {channels}; use "
            "members of the images' kind (grayscale or RGB)"
        )
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
