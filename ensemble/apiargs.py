"""The Python API's own arguments (members, paths, image arrays), checked as the command line checks
its options: a notebook's mistake raises the EnsError the matching `ens` option gives, never a numpy
or Python error from deep inside. The options of a prediction are checked by `ensemble.runs.options`,
for the command line and the API alike.

>>> member_args(("a", "b"))
['a', 'b']
"""

from __future__ import annotations

import os

import numpy as np

from ensemble.data.datafile import as_array, as_pixels
from ensemble.errors import EnsError
from ensemble.members.member import Member
from ensemble.members.store import NO_MEMBERS
from ensemble.optionvalues import check_path, short_repr


def path_or_none(value, what: str):
    """None, or a path checked like `check_path`."""
    return None if value is None else check_path(value, what)


def member_args(members) -> list[Member | str | os.PathLike] | str | None:
    """None (the whole store), 'a,b' text, one name/path/Member, or a list of them; [] is refused."""
    if members is None or isinstance(members, str):
        return members
    if isinstance(members, Member | os.PathLike):
        return [members]
    if not isinstance(members, list | tuple):
        raise EnsError(
            f"members {short_repr(members)} are not member names, .onnx paths or Members; "
            "give e.g. ['a', 'b'] or 'a,b'"
        )
    if not members:
        raise EnsError(NO_MEMBERS)
    for member in members:
        if not isinstance(member, Member):
            check_path(member, "member")
    return list(members)


def as_images(images) -> np.ndarray:
    """Checked uint8 images: grayscale (N, H, W), or RGB (N, H, W, 3) from (N, H, W, 3) or (N, 3, H, W)
    (a 4-D array is channels last when its last axis is 1 or 3, else channels first)."""
    array = as_array(images, "images")
    if array.ndim == 4 and array.shape[3] not in (1, 3) and array.shape[1] in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 4:
        return as_pixels(array, "images")
    if array.shape[3] != 3:
        raise EnsError(
            f"images are a {array.dtype} array of shape {array.shape}; expected (N, H, W) grayscale, or "
            "(N, H, W, 3) or (N, 3, H, W) RGB"
        )
    flat = as_pixels(array.reshape(array.shape[0], array.shape[1], -1), "images")
    return flat.reshape(array.shape)
