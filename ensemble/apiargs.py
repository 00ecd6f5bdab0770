"""The Python API's arguments, checked as the command line checks its options: a notebook's mistake
raises the EnsError the matching `ens` option gives, never a numpy or Python error from deep inside.

>>> predict_options(batch_size="64")
Traceback (most recent call last):
ensemble.errors.EnsError: batch_size '64' is not a whole number (a str); images per batch, e.g. 64
"""

from __future__ import annotations

import os

import numpy as np

from ensemble.errors import EnsError
from ensemble.inference.cleanup import check_connectivity, min_area_array, parse_min_area
from ensemble.inference.fusion import gain_array, normalise_weights, parse_class_gain, parse_weights
from ensemble.inference.options import DEFAULT_BATCH, PredictOptions
from ensemble.inference.tta import get_views, list_tta
from ensemble.members.member import Member
from ensemble.members.session import Device
from ensemble.members.store import NO_MEMBERS
from ensemble.optionvalues import check_int, check_path, short_repr


def flag(value, what: str) -> bool:
    """True or False (not 'no', 0 or None, which Python would read as False)."""
    if not isinstance(value, bool | np.bool_):
        raise EnsError(f"{what} {short_repr(value)} is not True or False")
    return bool(value)


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


def tta_arg(tta, default: str | None = None) -> str | None:
    """A TTA name (none, flip, hv), or `default` for None."""
    if tta is None:
        return default
    if not isinstance(tta, str):
        raise EnsError(f"unknown TTA {short_repr(tta)}; choose one of {', '.join(list_tta())}")
    get_views(tta)
    return str(tta.value if hasattr(tta, "value") else tta)


def device_arg(device) -> str:
    """One of the `--device` choices."""
    choices = [d.value for d in Device]
    if isinstance(device, Device):
        return device.value
    if not isinstance(device, str) or device not in choices:
        raise EnsError(f"device {short_repr(device)} is unknown; choose one of {', '.join(choices)}")
    return device


def batch_size_arg(batch_size) -> int:
    return check_int(batch_size, "batch_size", 1, None, f"images per batch, e.g. {DEFAULT_BATCH}")


def predict_options(
    allow_background=False, batch_size=DEFAULT_BATCH, device="auto", threads=None, gray_to_rgb=False
) -> PredictOptions:
    """The run settings of `load_ensemble`, each checked like its `ens predict` option."""
    return PredictOptions(
        allow_background=flag(allow_background, "allow_background"),
        batch_size=batch_size_arg(batch_size),
        device=device_arg(device),
        threads=None if threads is None else check_int(threads, "threads", 1, None, "CPU threads, e.g. 4"),
        gray_to_rgb=flag(gray_to_rgb, "gray_to_rgb"),
    )


def fusion_args(members: list[Member], weights, class_gain, min_area, connectivity) -> dict:
    """Fusion, decoding and cleanup settings for `resolve_options`: text as `ens predict` reads it
    (weights 'a=1,b=2', class_gain '4=8', min_area '20' or '1=30,4=5'), else numbers checked alike."""
    names, n_classes = [m.name for m in members], members[0].n_classes
    if isinstance(weights, str):
        weights = parse_weights(weights, names)
    elif weights is not None:
        _refuse_bools(weights, "fusion weights", "one number >= 0 per member")
        normalise_weights(weights, len(names), n_classes)
        weights = np.array(weights, np.float64)
    if isinstance(class_gain, str):
        class_gain = parse_class_gain(class_gain, n_classes)
    elif class_gain is not None:
        _refuse_bools(class_gain, "class gains", f"{n_classes} numbers > 0")
        class_gain = gain_array(class_gain, n_classes)
    if isinstance(min_area, str):
        min_area = parse_min_area(min_area, n_classes)
    elif min_area is not None:
        min_area = min_area_array(min_area, n_classes)
    connectivity = None if connectivity is None else check_connectivity(connectivity)
    return {"weights": weights, "class_gain": class_gain, "min_area": min_area, "connectivity": connectivity}


def _refuse_bools(value, what: str, allowed: str) -> None:
    """True/False would count as 1/0 weights or gains: refuse them rather than guess."""
    if _holds_bool(value):
        raise EnsError(f"{what} {short_repr(value)} hold True/False; give {allowed}")


def _holds_bool(value) -> bool:
    if isinstance(value, bool | np.bool_):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "b" or (value.dtype == object and any(map(_holds_bool, value.flat)))
    return isinstance(value, list | tuple) and any(map(_holds_bool, value))
