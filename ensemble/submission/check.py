"""Validation of a submission CSV before anyone uploads it: header, truncation, rows, ids, values,
runs and their overlaps. Every problem is one line with its line number.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.errors import EnsError
from ensemble.machine import physical_memory
from ensemble.optionvalues import check_int, check_n_classes, check_path, short_repr
from ensemble.submission.convention import DEFAULT_RLE, RleConvention, check_convention, header_hint
from ensemble.submission.formats import SubmissionFormat, detect_format
from ensemble.submission.problems import Problem, Problems
from ensemble.submission.textids import ImageIndex, has_text_ids, index_from_rows, parse_text_ids

MAX_PIXELS = 1 << 24  # 4096x4096 per image; a flat header of that size is already ~140 MB
MAX_LABEL_BYTES = 64 << 30


@dataclass(frozen=True)
class ParsedCsv:
    """A submission read as far as possible: its format (None if unknown), rows and problems."""

    path: Path
    format: str | None
    n_rows: int
    ids: np.ndarray
    labels: np.ndarray | list[np.ndarray]
    problems: tuple[Problem, ...]
    n_hidden: int


def check_submission(
    path: str | os.PathLike,
    n_images: int | None,
    image_shape: tuple[int, int],
    n_classes: int,
    limit: int = 10,
    *,
    rle: RleConvention = DEFAULT_RLE,
) -> list[Problem]:
    """Return the first `limit` problems of the CSV at `path`, ordered by line; empty means valid.

    An RLE file is read under the convention `rle`; a flat one is detected from its header.
    """
    return list(parse_submission(path, image_shape, n_classes, n_images, limit, rle=rle).problems)


def parse_submission(
    path: str | os.PathLike,
    image_shape: tuple[int, int] | None,
    n_classes: int,
    n_images: int | None = None,
    limit: int = 10,
    *,
    rle: RleConvention = DEFAULT_RLE,
    images: ImageIndex | None = None,
    complete: bool = True,
) -> ParsedCsv:
    """Read, detect the format (RLE under the convention `rle`), parse and validate; the labels
    are exact only if no problems.

    `images` (an image folder's stems and sizes) gives text ids and each image's size; with
    `complete` every one of them needs its rows. Without it, ids are integers, or (rle) text ids
    named by the file itself, all of `image_shape`. Labels of mixed sizes come back as a list."""
    path = check_path(path, "submission path")
    check_convention(rle)
    if images is not None and not isinstance(images, ImageIndex):
        raise EnsError(
            f"images {type(images).__name__} are not an ImageIndex (an image folder's stems and sizes)"
        )
    if images is not None:
        image_shape = images.uniform or (1, 1)
    image_shape = _check_arguments(image_shape, n_classes, n_images)
    data = _read(path)
    problems = Problems(limit)
    empty_ids, empty_labels = np.empty(0, np.int64), np.empty((0, *image_shape), np.uint8)

    def result(fmt: str | None, n_rows: int, ids=empty_ids, labels=empty_labels) -> ParsedCsv:
        first = problems.first()
        return ParsedCsv(path, fmt, n_rows, ids, labels, tuple(first), problems.total - len(first))

    if not data:
        problems.add(None, "file is empty; a submission starts with a header line")
        return result(None, 0)
    if b"\r\n" in data:
        data = data.replace(b"\r\n", b"\n")
    header_end = data.find(b"\n")
    header = data if header_end < 0 else data[:header_end]
    fmt = detect_format(header, rle)
    if fmt is None:
        which = "rle" if rle == DEFAULT_RLE else f"rle under {' '.join(rle.options())}"
        problems.add(
            1,
            f"header {_show(header)} is not a submission header; expected 'id,0,1,...' (flat) "
            f"or {rle.header_line.decode()!r} ({which}){header_hint(header, rle)}",
        )
        return result(None, 0)
    if header_end < 0:
        problems.add(1, "the file ends inside the header line; it looks truncated")
        return result(fmt.name, 0)
    if images is not None and images.uniform is None and fmt.name == "flat":
        problems.add(1, "a flat CSV has one image size, but the images have several; write --format rle")
        return result(fmt.name, 0)
    wrong_header = fmt.header_problem(header, image_shape, n_classes)
    if wrong_header:
        problems.add(1, wrong_header)
        return result(fmt.name, 0)
    body = data[header_end + 1 :]
    if body and not body.endswith(b"\n"):
        problems.add(
            2 + body.count(b"\n"),
            "the last line has no newline at its end; the file looks truncated "
            "(cut while writing or copying), so write it again",
        )
        body = body[: body.rfind(b"\n") + 1]
    n_rows = body.count(b"\n")
    if images is None and fmt.name != "flat" and has_text_ids(fmt, body):
        images = index_from_rows(fmt, body, image_shape)
    ids, labels = _parse_rows(fmt, body, n_rows, image_shape, images, n_classes, problems, complete)
    _check_row_count(problems, fmt.rows_per_image(n_classes), len(ids), n_rows, n_images)
    return result(fmt.name, n_rows, ids, labels)


def _parse_rows(
    fmt: SubmissionFormat,
    body: bytes,
    n_rows: int,
    image_shape: tuple[int, int],
    images: ImageIndex | None,
    n_classes: int,
    problems: Problems,
    complete: bool,
):
    """(ids, labels) of the rows after the header: by text id against `images` (each its own size),
    else by integer id, all of `image_shape`."""
    if images is not None:
        _check_allocation(n_rows, (1, int((images.sizes[:, 0] * images.sizes[:, 1]).max(initial=1))))
        return parse_text_ids(fmt, body, 2, images, n_classes, problems, complete)
    _check_allocation(n_rows, image_shape)
    return fmt.parse(np.frombuffer(body, np.uint8), 2, image_shape, n_classes, problems)


def _check_row_count(
    problems: Problems, per_image: int | None, n_ids: int, n_rows: int, n_images: int | None
) -> None:
    """Note a file whose rows do not cover the `n_images` expected (`per_image` rows each, or any
    number of rows per image when None), or one with no rows at all."""
    if n_images is not None and per_image is None and n_ids != n_images:
        problems.add(None, f"file has rows for {n_ids} images, expected {n_images} images")
    elif n_images is not None and per_image is not None and n_rows != n_images * per_image:
        detail = "" if per_image == 1 else f" x {per_image} classes = {n_images * per_image} rows"
        problems.add(None, f"file has {n_rows} rows, expected {n_images} images{detail}")
    elif n_rows == 0:
        problems.add(None, "file has a header but no rows")


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise EnsError(f"{str(path)!r} is a directory; pass the submission CSV file itself")
    if not path.exists():
        raise EnsError(f"submission {str(path)!r} does not exist; check the path")
    return path.read_bytes()


def _check_arguments(image_shape: tuple[int, int], n_classes: int, n_images: int | None) -> tuple[int, int]:
    height, width = check_image_shape(image_shape)
    if height * width > MAX_PIXELS:
        raise EnsError(
            f"image shape {height}x{width} has {height * width:,} pixels; submissions are checked for "
            f"images of at most {MAX_PIXELS:,} pixels (4096x4096); check --shape (the course's is 64x128)"
        )
    check_n_classes(n_classes)
    if n_images is not None:
        check_int(n_images, "--n-images", 0, None, "give the number of images, e.g. 10022")
    return height, width


def check_image_shape(image_shape) -> tuple[int, int]:
    """An (H, W) pair of whole numbers >= 1."""
    hint = "give (H, W) with whole numbers H, W >= 1, e.g. (64, 128)"
    shaped = isinstance(image_shape, np.ndarray) and image_shape.ndim == 1
    if isinstance(image_shape, str | bytes) or not (shaped or isinstance(image_shape, Sequence)):
        raise EnsError(f"image shape {short_repr(image_shape)} is not (H, W); {hint}")
    if len(image_shape) != 2:
        raise EnsError(
            f"image shape {short_repr(tuple(image_shape))} is not (H, W) with H, W >= 1; e.g. 64x128"
        )
    return tuple(check_int(side, "image shape side", 1, None, hint) for side in image_shape)


def _check_allocation(n_rows: int, image_shape: tuple[int, int]) -> None:
    """Refuse before allocating label maps (at most one image per row) that memory cannot hold."""
    need = n_rows * image_shape[0] * image_shape[1]
    budget = _memory_budget()
    if need > budget:
        raise EnsError(
            f"{n_rows:,} rows of {image_shape[0]}x{image_shape[1]} images could need {need / 2**30:,.1f} GiB "
            f"of label maps, more than the {budget / 2**30:,.1f} GiB allowed here (half the memory); "
            "check --shape"
        )


def _memory_budget() -> int:
    """Half the machine's memory, at most MAX_LABEL_BYTES."""
    memory = physical_memory()
    return MAX_LABEL_BYTES if memory is None else min(memory // 2, MAX_LABEL_BYTES)


def _show(header: bytes) -> str:
    return "'" + repr(header[:40])[2:-1] + ("…" if len(header) > 40 else "") + "'"
