"""Strict parsing of the numbers and KEY=VALUE lists users type in options, ids files and seeds.

Python's int() and float() also accept '1_0', non-ASCII digits, 'nan' and 'infinity'; a typed value
is taken only in plain ASCII decimal form, so nothing is silently read as something else.

>>> key_values("4=8, 3=1.2", "--class-gain", "4=8"), parse_int("20", "--min-area", 0, 99, "e.g. 20")
([('4', '8'), ('3', '1.2')], 20)
"""

from __future__ import annotations

import math
import re

from ensemble.errors import EnsError

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
MAX_SEED = 2**32 - 1


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
