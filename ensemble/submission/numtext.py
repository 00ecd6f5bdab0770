"""Integers as ASCII text, vectorised: format many at once, and scan lines and integer tokens back.

Submission CSVs hold tens of millions of small integers; Python's str/int per value would take
seconds, so both directions work on whole uint8 byte buffers with numpy.
"""

from __future__ import annotations

import numpy as np

ZERO = ord("0")
COMMA = ord(",")
NEWLINE = ord("\n")
SPACE = ord(" ")
MAX_DIGITS = 12
NO_DIGITS = -1


def format_ints(values: np.ndarray, terminators: np.ndarray) -> np.ndarray:
    """Return the uint8 text of each value in decimal followed by its terminator byte.

    A value of NO_DIGITS (-1) writes only its terminator, for empty fields.

    >>> bytes(format_ints(np.array([7, 0, 1203, -1]), np.frombuffer(b",,_\\n", np.uint8)))
    b'7,0,1203_\\n'
    """
    values = np.asarray(values, np.int64).ravel()
    if values.size == 0:
        return np.empty(0, np.uint8)
    top = max(int(values.max()), 0)
    width = len(str(top))
    rest = np.maximum(values, 0).astype(np.int32 if top < 2**31 else np.int64)
    n_digits = (values >= 0).astype(np.int8)
    for power in range(1, width):
        n_digits += rest >= 10**power
    chars = np.empty((values.size, width + 1), np.uint8)
    for column in range(width - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        chars[:, column] = digit
    chars[:, :width] += ZERO
    chars[:, width] = terminators
    keep = np.arange(width + 1, dtype=np.int8) >= (width - n_digits)[:, None]
    return chars[keep]


def line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (starts, ends) of the newline-terminated lines of `buf`; `ends` index the newlines.

    >>> [x.tolist() for x in line_bounds(np.frombuffer(b"ab\\n\\nc\\n", np.uint8))]
    [[0, 3, 4], [2, 3, 5]]
    """
    ends = np.flatnonzero(buf == NEWLINE)
    starts = np.empty_like(ends)
    if ends.size:
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts, ends


def scan_ints(buf: np.ndarray, token: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse the maximal runs of True in `token` as decimal integers.

    Returns (starts, ends, values): byte offsets of each run (end exclusive) and its value, or -1
    where the run holds a byte other than a digit or is longer than MAX_DIGITS.

    >>> buf = np.frombuffer(b"12 x3 0 7a", np.uint8)
    >>> [x.tolist() for x in scan_ints(buf, buf != ord(" "))]
    [[0, 3, 6, 8], [2, 5, 7, 10], [12, -1, 0, -1]]
    """
    token = np.asarray(token, bool)
    edges = np.diff(token.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    lengths = ends - starts
    values = np.zeros(starts.size, np.int64)
    longest = int(lengths.max()) if lengths.size else 0
    for place in range(min(longest, MAX_DIGITS)):
        has = lengths > place
        values[has] += (buf[ends[has] - 1 - place].astype(np.int64) - ZERO) * 10**place
    bad = lengths > MAX_DIGITS
    not_digit = token & ((buf < ZERO) | (buf > ZERO + 9))
    if not_digit.any():
        bad[np.searchsorted(ends, np.flatnonzero(not_digit), side="right")] = True
    values[bad] = -1
    return starts, ends, values
