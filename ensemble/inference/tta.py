"""Test-time augmentation: flip views of a batch, each with its inverse right beside it.

Views act on the last two axes (H, W) of any array, so the same view flips input pixels
(B, 1, H, W) and un-flips output probabilities (B, C, H, W); non-square images work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ensemble.errors import EnsError
from ensemble.optionvalues import short_repr

Transform = Callable[[np.ndarray], np.ndarray]


def identity(x: np.ndarray) -> np.ndarray:
    return x


def hflip(x: np.ndarray) -> np.ndarray:
    """Mirror left-right (last axis)."""
    return x[..., ::-1]


def vflip(x: np.ndarray) -> np.ndarray:
    """Mirror top-bottom (second-to-last axis)."""
    return x[..., ::-1, :]


def hvflip(x: np.ndarray) -> np.ndarray:
    """Rotate by 180 degrees (both mirrors)."""
    return x[..., ::-1, ::-1]


@dataclass(frozen=True)
class View:
    """One augmented view: `apply` to the input, `invert` on the prediction."""

    name: str
    apply: Transform
    invert: Transform


IDENTITY = View("identity", identity, identity)
HFLIP = View("hflip", hflip, hflip)
VFLIP = View("vflip", vflip, vflip)
HVFLIP = View("hvflip", hvflip, hvflip)


class TTA(str, Enum):
    """TTA settings offered on the command line."""

    none = "none"
    flip = "flip"
    hv = "hv"


TTA_VIEWS: dict[str, tuple[View, ...]] = {
    "none": (IDENTITY,),
    "flip": (IDENTITY, HFLIP),
    "hv": (IDENTITY, HFLIP, VFLIP, HVFLIP),
}


def get_views(name: str | TTA) -> tuple[View, ...]:
    """The views of a TTA setting; an unknown name lists the valid ones."""
    key = name.value if isinstance(name, TTA) else name
    try:
        return TTA_VIEWS[key]
    except KeyError:
        raise EnsError(f"unknown TTA {short_repr(key)}; choose one of {', '.join(list_tta())}") from None


def list_tta() -> list[str]:
    return list(TTA_VIEWS)


def augment(batch: np.ndarray, views: tuple[View, ...]) -> np.ndarray:
    """Stack every view of a (B, ..., H, W) batch into one (V*B, ..., H, W) batch, views outermost."""
    if len(views) == 1 and views[0] is IDENTITY:
        return batch
    return np.concatenate([view.apply(batch) for view in views])


def merge(predictions: np.ndarray, views: tuple[View, ...], overwrite: bool = False) -> np.ndarray:
    """Invert each view's slice of a (V*B, C, H, W) prediction and average them to (B, C, H, W).

    With `overwrite=True` a writable float32 `predictions` is reused: the mean is accumulated in
    its first slice (no batch-sized copy), so the caller must not read `predictions` afterwards.
    """
    if len(views) == 1 and views[0] is IDENTITY:
        return predictions
    parts = np.split(predictions, len(views))
    first = views[0].invert(parts[0])
    reuse = overwrite and first is parts[0] and first.dtype == np.float32 and first.flags.writeable
    total = first if reuse else np.array(first, dtype=np.float32, copy=True)
    for view, part in zip(views[1:], parts[1:], strict=True):
        np.add(total, view.invert(part), out=total)
    total *= np.float32(1.0 / len(views))
    return total
