"""Strict parsing of the numbers and KEY=VALUE lists users type in options, ids files and seeds.

Python's int() and float() also accept '1_0', non-ASCII digits, 'nan' and 'infinity'; a typed value
is taken only in plain ASCII decimal form, so nothing is silently read as something else.

>>> key_values("4=8, 3=1.2", "--class-gain", "4=8"), parse_int("20", "--min-area", 0, 99, "e.g. 20")
([('4', '8'), ('3', '1.2')], 20)
"""

from __future__ import annotations

import math
import operator
import os
import re
from pathlib import Path

from ensemble.errors import EnsError

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
MAX_SEED = 2**32 - 1
MAX_CLASSES = 256  # labels are uint8: class 256 would wrap to 0


def parse_int(text: str, what: str, low: int, high: int, hint: str) -> int:
    """`text` as an int in low..high, written in ASCII digits; EnsError naming `what` otherwise."""
    stripped = text.strip()
    if not _INT.fullmatch(stripped):
        raise EnsError(f"{what} {text!r} is not a whole number in plain digits 0-9; {hint}")
    digits = stripped.lstrip("+-").lstrip("0")
    # compare lengths first: int() refuses strings of thousands of digits
    if len(digits) > len(str(max(abs(low), abs(high)))) or not low <= int(stripped) <= high:
        raise EnsError(f"{what} {text!r} is outside {low}..{high}; {hint}")
    return int(stripped)


def parse_number(text: str, what: str, hint: str) -> float:
    """`text` as a finite float written in plain decimal (1, 0.5, 2e-3); EnsError otherwise."""
    stripped = text.strip()
    value = float(stripped) if _FLOAT.fullmatch(stripped) else math.nan
    if not math.isfinite(value):
        raise EnsError(f"{what} {text!r} is not a finite decimal number (e.g. 0.5 or 2e-3); {hint}")
    return value


def key_values(text: str, option: str, example: str) -> list[tuple[str, str]]:
    """Split `a=1,b=2` into stripped (key, value) pairs; refuses a part without '=' and a repeated key."""
    pairs: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise EnsError(f"{option} entry {part!r} is not KEY=VALUE; e.g. {option} {example}")
        if any(key == seen for seen, _ in pairs):
            raise EnsError(
                f"{option} gives {key!r} twice in {text!r}; give each once, e.g. {option} {example}"
            )
        pairs.append((key, value.strip()))
    return pairs


def name_list(text: str, option: str, example: str) -> list[str]:
    """Split `a,b,c` into stripped names; refuses an empty name, a repeated one, and a non-printing
    character (a newline, U+2028, a tab, ...), which would break a name over lines in what shows it."""
    bad = next((char for char in text if not char.isprintable() and char != " "), None)
    if bad is not None:
        raise EnsError(
            f"{option} {text!r} holds the non-printing character {bad!r} (a control or separator "
            f"character); names are printable text on one line, like {example}"
        )
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or not all(names):
        raise EnsError(f"{option} {text!r} has an empty name; write them like {example}")
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise EnsError(f"{option} lists {repeated!r} twice; list each once, like {example}")
    return names


def check_seed(seed: int, option: str) -> int:
    """A seed in 0..2**32-1, the range numpy and torch both accept."""
    if not 0 <= seed <= MAX_SEED:
        raise EnsError(f"{option} {seed} is outside 0..{MAX_SEED}; use a non-negative seed such as 0")
    return seed


def check_int(value, what: str, low: int, high: int | None, hint: str) -> int:
    """`value` as an int in low..high (None: no upper bound): a Python or numpy integer, not a bool,
    a float or a string (the Python API's counterpart of `parse_int`); EnsError naming `what` otherwise."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None:
        raise EnsError(f"{what} {short_repr(value)} is not a whole number (a {type(value).__name__}); {hint}")
    if high is None and number < low:
        raise EnsError(f"{what} {short_repr(value)} must be >= {low}; {hint}")
    if high is not None and not low <= number <= high:
        raise EnsError(f"{what} {short_repr(value)} is outside {low}..{high}; {hint}")
    return number


def check_n_classes(value, what: str = "--n-classes") -> int:
    """A class count of 2..MAX_CLASSES: labels are uint8, so more classes would wrap around."""
    return check_int(
        value, what, 2, MAX_CLASSES, f"labels are uint8, so 2..{MAX_CLASSES} classes; the course data has 5"
    )


def check_path(value, what: str) -> Path:
    """A path given as str or os.PathLike (not bytes, a number or None), without NUL characters."""
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if isinstance(text, str) and "\0" in text:
            raise EnsError(
                f"{what} {short_repr(text)} holds a NUL character, which no file name can; fix the path"
            )
        if isinstance(text, str) and text:
            return Path(text)
    raise EnsError(f"{what} {short_repr(value)} is not a file path; give a str or pathlib.Path")


def short_repr(value, limit: int = 60) -> str:
    """repr of a value on one line, cut to `limit` characters (a 2-D array or a 10**6-digit int too),
    for messages that quote what they were given."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # repr of 4300+ digits fails
        return f"(an int of about {int(value.bit_length() * math.log10(2)) + 1} digits)"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
