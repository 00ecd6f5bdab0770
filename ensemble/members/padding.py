"""Images of any size for members of a fixed size or size multiple: reflect-pad, run, crop back.

A member whose graph fixes H x W gets smaller images padded (reflect, bottom and right) to its size;
one that needs H and W divisible by its `size_multiple` gets them padded up to the next multiple.
Its probabilities are cropped back to the image, so the pipeline never sees the padding. An image
larger than a fixed-size member cannot be fed to it and is refused before any work.
"""

from __future__ import annotations

import numpy as np

from ensemble.errors import EnsError
from ensemble.members.member import Member


def padded_size(member: Member, size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) `member` is run at for images of `size`: its fixed size, or `size` rounded up to
    its size multiple.

    >>> from types import SimpleNamespace as N
    >>> padded_size(N(info=N(input_hw=(None, None), size_multiple=16)), (50, 64))
    (64, 64)
    """
    multiple = member.info.size_multiple
    return tuple(  # type: ignore[return-value]
        fixed if fixed is not None else -(-value // multiple) * multiple
        for fixed, value in zip(member.info.input_hw, size, strict=True)
    )


def check_fits(member: Member, size: tuple[int, int]) -> None:
    """Refuse images larger than a fixed-size member's input."""
    fixed = member.info.input_hw
    for value, limit, label in zip(size, fixed, ("height", "width"), strict=True):
        if limit is not None and value > limit:
            raise EnsError(
                f"member {member.name!r} takes images of {label} {limit} at most (its graph is fixed to "
                f"{fixed[0]}x{fixed[1]}; smaller images are padded to it) but the data has "
                f"{size[0]}x{size[1]} images; re-export it with dynamic H and W (a fully convolutional "
                "net), or resize the images"
            )


def pad(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reflect-pad (B, C, H, W) at the bottom and right to (B, C, *size); unchanged when it fits.

    >>> pad(np.arange(6).reshape(1, 1, 2, 3), (3, 5))[0, 0].tolist()
    [[0, 1, 2, 1, 0], [3, 4, 5, 4, 3], [0, 1, 2, 1, 0]]
    """
    extra_h, extra_w = size[0] - batch.shape[2], size[1] - batch.shape[3]
    if extra_h == 0 and extra_w == 0:
        return batch
    mode = "reflect" if batch.shape[2] > 1 and batch.shape[3] > 1 else "edge"
    return np.pad(batch, ((0, 0), (0, 0), (0, extra_h), (0, extra_w)), mode=mode)


def crop(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The top-left (B, C, *size) of padded outputs; unchanged when nothing was padded.

    >>> crop(np.ones((1, 2, 4, 6)), (3, 5)).shape
    (1, 2, 3, 5)
    """
    if probs.shape[2:] == tuple(size):
        return probs
    return np.ascontiguousarray(probs[:, :, : size[0], : size[1]])
