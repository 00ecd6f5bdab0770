"""Outputs at a lower resolution: the integer factor, its bilinear resize, and that resize as ONNX.

SegFormer returns logits at 1/4 of the input size and many nets leave the last upsampling to their
post-processing (`F.interpolate(..., mode="bilinear", align_corners=False)`, `tf.image.resize`).
A member is at the input size, so the same resize is folded into its graph, before the softmax when
the net emits logits, as those libraries upsample logits and then take the softmax or argmax.
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ensemble.members.contract import MAX_UPSAMPLE_FACTOR as MAX_FACTOR  # beyond: more likely a wrong output


def reduction_factor(spatial: tuple[int, ...], hw: tuple[int, int]) -> int | None:
    """1 when `spatial` is the input size, f when the input is f times it on both axes, else None.

    >>> reduction_factor((16, 32), (64, 128)), reduction_factor((64, 128), (64, 128))
    (4, 1)
    >>> reduction_factor((16, 16), (64, 128)) is None
    True
    """
    if len(spatial) != 2 or min(spatial) < 1:
        return None
    (height, width), (in_h, in_w) = spatial, hw
    if in_h % height or in_w % width or in_h // height != in_w // width:
        return None
    factor = in_h // height
    return factor if factor <= MAX_FACTOR else None


def upsample_bilinear(nchw: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) to (H*f, W*f) with half-pixel centres (align_corners=False),
    as torch's interpolate, tf.image.resize and ONNX Resize compute it: the parity reference.

    >>> upsample_bilinear(np.array([[[[0.0, 4.0]]]], np.float32), 2)[0, 0].tolist()
    [[0.0, 1.0, 3.0, 4.0], [0.0, 1.0, 3.0, 4.0]]
    """
    out = nchw.astype(np.float32, copy=False)
    if factor == 1:
        return out
    for axis in (2, 3):
        size = out.shape[axis]
        source = np.maximum((np.arange(size * factor, dtype=np.float64) + 0.5) / factor - 0.5, 0.0)
        low = np.minimum(np.floor(source).astype(np.int64), size - 1)
        high = np.minimum(low + 1, size - 1)
        weight = (source - low).astype(np.float32)
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        weight = weight.reshape(shape)
        out = np.take(out, low, axis=axis) * (1 - weight) + np.take(out, high, axis=axis) * weight
    return out.astype(np.float32, copy=False)


def resize_nodes(current: str, output: str, factor: int, fresh) -> tuple[list, list]:
    """ONNX nodes (and their constant) resizing (N, C, h, w) `current` by `factor` into `output`:
    Resize(linear, half_pixel) with scales, so it follows a dynamic H and W."""
    scales = fresh("ens_upsample_scales")
    const = numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), scales)
    node = helper.make_node(
        "Resize", [current, "", scales], [output], mode="linear", coordinate_transformation_mode="half_pixel"
    )
    return [node], [const]
