"""JSON that ens wrote and reads back later (caches, stamps), parsed so that no content raises
anything but `JsonProblem`: bounded size and nesting, finite numbers, each key once, an object at
the top. A reader turns the problem into its own one-line error or a recompute."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np

from ensemble.errors import first_line

MAX_BYTES = 4 << 20
MAX_DEPTH = 32
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JsonProblem(ValueError):
    """Why a text is not a JSON object ens can use, in a few words on one line."""


def read_json_object(path: str | os.PathLike, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> dict:
    """The JSON object in the file at `path`; JsonProblem when it cannot be read or is not one."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise JsonProblem(f"unreadable: {exc.strerror or exc}") from exc
    return loads_object(data, max_bytes, max_depth)


def loads_object(text: str | bytes, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> dict:
    """The JSON object in `text` (UTF-8 when bytes); JsonProblem for anything else: more than
    `max_bytes`, nested deeper than `max_depth`, NaN/Infinity or a number beyond float range, a
    key given twice, invalid JSON, or a top level that is not an object."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise JsonProblem(f"larger than {max_bytes} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonProblem("not UTF-8 text") from exc
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonProblem(f"nested {depth} deep, at most {max_depth} allowed")
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=unique_keys,
        )
    except RecursionError as exc:  # unreachable below MAX_DEPTH; kept so no input escapes as one
        raise JsonProblem("nested too deeply") from exc
    except ValueError as exc:
        raise JsonProblem(first_line(exc, 120)) from exc
    if not isinstance(value, dict):
        raise JsonProblem(f"a JSON {type(value).__name__} at the top, expected an object")
    return value


def nesting_depth(text: str) -> int:
    """How deep `[` and `{` nest in a JSON text, outside its strings (counted before parsing, so a
    deep text never reaches the recursive parser)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json object hook: a key given twice is an error, not 'the last one wins'."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is beyond the float range")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > 2**63:
        raise ValueError(f"the integer {text[:20]}... is beyond 2**63")
    return value
