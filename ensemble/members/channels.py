"""Which images may feed which members: grayscale members take grayscale images; RGB members take
RGB images, and grayscale ones only when asked (`--gray-to-rgb` replicates the channel)."""

from __future__ import annotations

from collections.abc import Iterable

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
