"""The registry of submission CSV formats (`flat`, `rle`) and detection of a file's format.

The `rle` format is built for an RleConvention (pixel order, start, layout, header); `flat` has none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from ensemble.errors import EnsError
from ensemble.optionvalues import short_repr
from ensemble.submission import flatcsv, rlecsv
from ensemble.submission.convention import DEFAULT_RLE, RleConvention, check_convention
from ensemble.submission.problems import Problems

Shape = tuple[int, int]


@dataclass(frozen=True)
class SubmissionFormat:
    """How one CSV format writes and reads label maps.

    `encode(ids, labels, n_classes)` gives the rows of a batch; `parse(body, first_line, shape,
    n_classes, problems)` returns (ids, labels) and records what is wrong in `problems`;
    `rows_per_image(n_classes)` is None where rows of empty classes may be left out;
    `convention` is the RleConvention an `rle` format was built for (the default for `flat`).
    """

    name: str
    description: str
    rows_per_image: Callable[[int], int | None]
    header: Callable[[Shape, int], bytes]
    matches: Callable[[bytes], bool]
    header_problem: Callable[[bytes, Shape, int], str | None]
    encode: Callable[[np.ndarray, np.ndarray, int], bytes]
    parse: Callable[[np.ndarray, int, Shape, int, Problems], tuple[np.ndarray, np.ndarray]]
    convention: RleConvention = DEFAULT_RLE


def _flat(rle: RleConvention) -> SubmissionFormat:
    return SubmissionFormat(
        "flat",
        "course Kaggle format: id,0,1,...,H*W-1; one row per image, labels in row-major order",
        lambda n_classes: 1,
        flatcsv.header,
        flatcsv.matches,
        flatcsv.header_problem,
        flatcsv.encode,
        flatcsv.parse,
    )


def _rle(rle: RleConvention) -> SubmissionFormat:
    return SubmissionFormat(
        "rle",
        f"Kaggle run-length encoding, {rle.describe()}",
        partial(rlecsv.rows_per_image, rle=rle),
        partial(rlecsv.header, rle=rle),
        partial(rlecsv.matches, rle=rle),
        partial(rlecsv.header_problem, rle=rle),
        partial(rlecsv.encode, rle=rle),
        partial(rlecsv.parse, rle=rle),
        rle,
    )


FORMATS: dict[str, Callable[[RleConvention], SubmissionFormat]] = {"flat": _flat, "rle": _rle}


def get_format(name: str, rle: RleConvention = DEFAULT_RLE) -> SubmissionFormat:
    """Look a format up by name; an unknown name lists the valid ones. Only `rle` takes a convention."""
    check_convention(rle)
    try:
        build = FORMATS[name]
    except (KeyError, TypeError):
        raise EnsError(
            f"unknown submission format {short_repr(name)}; choose one of {', '.join(list_formats())}"
        ) from None
    if name != "rle" and rle != DEFAULT_RLE:
        raise EnsError(
            f"the RLE options {' '.join(rle.options())} apply to the rle format, not {name!r}; "
            "drop them or write rle"
        )
    return build(rle)


def list_formats() -> list[str]:
    return sorted(FORMATS)


def detect_format(header_line: bytes, rle: RleConvention = DEFAULT_RLE) -> SubmissionFormat | None:
    """The format whose header `header_line` (without its newline) looks like, or None.

    The RLE header is matched exactly first, so a convention's header starting `id,` is not flat.
    """
    formats = (_rle(rle), _flat(rle))
    return next((f for f in formats if f.matches(header_line)), None)
