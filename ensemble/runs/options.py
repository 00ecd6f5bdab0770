"""The options of a prediction, checked in one place for `ens predict` and the Python API: a value
either interface is given goes through the same check, so a mistake reads the same in both.

>>> run_options(workers=0)
Traceback (most recent call last):
ensemble.errors.EnsError: --workers got '0': input should be greater than or equal to 1
>>> run_options(runtime="nope")
Traceback (most recent call last):
ensemble.errors.EnsError: --runtime got 'nope'; allowed: 'auto', 'ort', 'openvino'
"""

from __future__ import annotations

import operator
from enum import Enum

import numpy as np

from ensemble.compiled.engine import GraphChoice
from ensemble.data.tta import get_views, list_tta
from ensemble.errors import EnsError
from ensemble.inference.cleanup import check_connectivity, min_area_array, parse_min_area
from ensemble.inference.fusion import gain_array, normalise_weights, parse_class_gain, parse_weights
from ensemble.inference.options import PredictOptions, resolve_options
from ensemble.members.ensemblefile import EnsembleSpec
from ensemble.members.member import Member
from ensemble.members.session import Device
from ensemble.optionvalues import short_repr
from ensemble.runtimes.kinds import Runtime


def option_name(field: str) -> str:
    """`--batch-size` for the field or keyword `batch_size`."""
    return "--" + field.replace("_", "-")


def flag(value, what: str) -> bool:
    """True or False (not 'no', 0 or None, which Python would read as False); `what` names it."""
    if not isinstance(value, bool | np.bool_):
        raise EnsError(f"{what} got {short_repr(value)}; allowed: True, False")
    return bool(value)


def whole(value, what: str, low: int = 1) -> int:
    """A Python or numpy integer >= `low` (not a bool, a float or a string)."""
    try:
        number = None if isinstance(value, bool | np.bool_) else operator.index(value)
    except TypeError:
        number = None
    if number is None:
        raise EnsError(
            f"{what} got {short_repr(value)} (a {type(value).__name__}): "
            f"input should be a whole number >= {low}"
        )
    if number < low:
        raise EnsError(f"{what} got '{number}': input should be greater than or equal to {low}")
    return number


def choice(value, what: str, choices: type[Enum]) -> str:
    """The value of one member of the str-Enum `choices`, given as that member or its text."""
    allowed = [c.value for c in choices]
    text = value.value if isinstance(value, choices) else value
    if not isinstance(text, str) or text not in allowed:
        raise EnsError(f"{what} got {short_repr(text)}; allowed: {', '.join(map(repr, allowed))}")
    return text


def _optional_whole(value, what: str) -> int | None:
    return None if value is None else whole(value, what)


_RUN_CHECKS = {
    "allow_background": flag,
    "batch_size": whole,
    "device": lambda value, what: choice(value, what, Device),
    "threads": _optional_whole,
    "gray_to_rgb": flag,
    "workers": _optional_whole,
    "runtime": lambda value, what: choice(value, what, Runtime),
}


def run_options(**given) -> PredictOptions:
    """`PredictOptions` with the run settings `given` (allow_background, batch_size, device, threads,
    gray_to_rgb, workers, runtime; the rest at their defaults), each checked like its option."""
    unknown = sorted(set(given) - set(_RUN_CHECKS))
    if unknown:
        raise TypeError(f"run_options() got unknown settings {unknown}")
    checked = {field: _RUN_CHECKS[field](value, option_name(field)) for field, value in given.items()}
    return PredictOptions(**checked)


def graph_arg(graph) -> str:
    """One of the `--graph` choices."""
    return choice(graph, "--graph", GraphChoice)


def tta_arg(tta, default: str | None = None) -> str | None:
    """A TTA name (none, flip, hv), or `default` for None."""
    if tta is None:
        return default
    text = tta.value if isinstance(tta, Enum) else tta
    if not isinstance(text, str):
        raise EnsError(f"unknown TTA {short_repr(tta)}; choose one of {', '.join(list_tta())}")
    get_views(text)
    return str(text)


def checked_options(
    members: list[Member],
    spec: EnsembleSpec | None,
    run: PredictOptions,
    *,
    tta=None,
    weights=None,
    class_gain=None,
    min_area=None,
    connectivity=None,
) -> PredictOptions:
    """`run` with the fusion, decoding and cleanup settings: each given one checked (text as
    `ens predict` reads it, or numbers), then resolved against the ensemble file `spec`."""
    fusion = fusion_values(members, weights, class_gain, min_area, connectivity)
    return resolve_options(members, spec, run, tta=tta_arg(tta), **fusion)


def fusion_values(members: list[Member], weights, class_gain, min_area, connectivity) -> dict:
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
