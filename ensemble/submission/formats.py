"""The registry of submission CSV formats (`flat`, `rle`) and detection of a file's format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ensemble.errors import EnsError
from ensemble.submission import flatcsv, rlecsv
from ensemble.submission.problems import Problems

Shape = tuple[int, int]


@dataclass(frozen=True)
class SubmissionFormat:
    """How one CSV format writes and reads label maps.

    `encode(ids, labels, n_classes)` gives the rows of a batch; `parse(body, first_line, shape,
    n_classes, problems)` returns (ids, labels) and records what is wrong in `problems`.
    """

    name: str
    description: str
    rows_per_image: Callable[[int], int]
    header: Callable[[Shape, int], bytes]
    matches: Callable[[bytes], bool]
    header_problem: Callable[[bytes, Shape, int], str | None]
    encode: Callable[[np.ndarray, np.ndarray, int], bytes]
    parse: Callable[[np.ndarray, int, Shape, int, Problems], tuple[np.ndarray, np.ndarray]]


FORMATS: dict[str, SubmissionFormat] = {
    "flat": SubmissionFormat(
        "flat",
        "course Kaggle format: id,0,1,...,H*W-1; one row per image, labels in row-major order",
        lambda n_classes: 1,
        flatcsv.header,
        flatcsv.matches,
        flatcsv.header_problem,
        flatcsv.encode,
        flatcsv.parse,
    ),
    "rle": SubmissionFormat(
        "rle",
        "Kaggle run-length encoding: ImageId_ClassId,EncodedPixels; one row per image and class 1..C-1",
        lambda n_classes: n_classes - 1,
        rlecsv.header,
        rlecsv.matches,
        rlecsv.header_problem,
        rlecsv.encode,
        rlecsv.parse,
    ),
}


def get_format(name: str) -> SubmissionFormat:
    """Look a format up by name; an unknown name lists the valid ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise EnsError(
            f"unknown submission format {name!r}; choose one of {', '.join(list_formats())}"
        ) from None


def list_formats() -> list[str]:
    return sorted(FORMATS)


def detect_format(header_line: bytes) -> SubmissionFormat | None:
    """The format whose header `header_line` (without its newline) looks like, or None."""
    return next((f for f in FORMATS.values() if f.matches(header_line)), None)
