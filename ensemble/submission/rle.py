"""Run-length encoding of label maps: pixels numbered column-major (Kaggle's usual) or row-major.

Pure numpy on whole batches: `label_runs` finds every run of every class at once, `check_runs`
finds malformed runs, `paint` turns runs back into label maps and finds pixels claimed twice.
Starts are 1-based here; a file numbering pixels from 0 is shifted when read and written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def flatten(labels: np.ndarray, order: str = "column") -> np.ndarray:
    """(N, H, W) -> (N, H*W) with pixels numbered top-to-bottom, then left-to-right ("column"), or
    left-to-right, then top-to-bottom ("row")."""
    labels = np.asarray(labels)
    if order == "row":
        return labels.reshape(len(labels), -1)
    return labels.transpose(0, 2, 1).reshape(len(labels), -1)


def unflatten(flat: np.ndarray, image_shape: tuple[int, int], order: str = "column") -> np.ndarray:
    """Inverse of `flatten`: (N, H*W) -> contiguous (N, H, W)."""
    height, width = image_shape
    if order == "row":
        return np.ascontiguousarray(flat.reshape(len(flat), height, width))
    return np.ascontiguousarray(flat.reshape(len(flat), width, height).transpose(0, 2, 1))


@dataclass(frozen=True)
class Runs:
    """Runs of equal labels: image index, 1-based start, length and label, sorted by (image, start)."""

    image: np.ndarray
    start: np.ndarray
    length: np.ndarray
    label: np.ndarray


def label_runs(labels: np.ndarray, order: str = "column") -> Runs:
    """All maximal runs of equal labels in `order` (see `flatten`), every class at once.

    >>> runs = label_runs(np.array([[[1, 1], [0, 1]]]))  # column-major pixels: 1 0 1 1
    >>> [x.tolist() for x in (runs.start, runs.length, runs.label)]
    [[1, 2, 3], [1, 1, 2], [1, 0, 1]]
    >>> label_runs(np.array([[[1, 1], [0, 1]]]), "row").length.tolist()  # row-major: 1 1 0 1
    [2, 1, 1]
    """
    flat = flatten(labels, order)
    n_images, n_pixels = flat.shape
    change = np.ones(flat.shape, bool)
    change[:, 1:] = flat[:, 1:] != flat[:, :-1]
    image, start = np.nonzero(change)
    end = np.empty_like(start)
    end[:-1] = np.where(image[1:] == image[:-1], start[1:], n_pixels)
    end[-1:] = n_pixels
    return Runs(image, start + 1, end - start, flat[image, start])


def check_runs(row: np.ndarray, start: np.ndarray, length: np.ndarray, n_pixels: int) -> np.ndarray:
    """Return, per run, 0 if fine or the code `describe_run` explains.

    Runs must be positive, lie inside 1..n_pixels, and within a row (same `row` value, runs
    given in file order) start in ascending order without overlapping the previous run.
    """
    code = np.zeros(start.size, np.int8)
    later = np.zeros(start.size, bool)
    later[1:] = row[1:] == row[:-1]
    previous_end = np.zeros(start.size, np.int64)
    previous_end[1:] = start[:-1] + length[:-1]
    previous_start = np.zeros(start.size, np.int64)
    previous_start[1:] = start[:-1]
    code[later & (start < previous_end)] = 4
    code[later & (start <= previous_start)] = 3
    code[start + length - 1 > n_pixels] = 2
    code[(start < 1) | (length < 1)] = 1
    return code


def describe_run(code: int, start: int, length: int, n_pixels: int, first: int = 1) -> str:
    """What `check_runs`' `code` means for the run (1-based `start`, `length`), in the numbering of a
    file whose first pixel is `first`, with a hint when the run fits the other numbering.

    >>> describe_run(2, 5, 3, 6, first=0)
    "run '4 3' ends past pixel 5, the last pixel of an image (for 1-based runs pass --rle-start 1)"
    """
    shown, last = start + first - 1, n_pixels + first - 1
    run = f"run '{shown} {length}'"
    if code == 1:
        hint = " (for 0-based runs pass --rle-start 0)" if first == 1 and start == 0 and length > 0 else ""
        return f"{run} is not positive; starts are {first}-based and lengths at least 1{hint}"
    if code == 2:
        hint = (
            " (for 1-based runs pass --rle-start 1)" if first == 0 and start + length == n_pixels + 2 else ""
        )
        return f"{run} ends past pixel {last}, the last pixel of an image{hint}"
    if code == 3:
        return f"{run} does not start after the previous run; starts must ascend"
    return f"{run} overlaps the previous run"


def paint(
    n_images: int,
    n_pixels: int,
    image: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    label: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw runs that lie inside their image into column-major label maps.

    Returns (labels (N, P) uint8, overlaps): `overlaps` holds (image, 0-based pixel) of the first
    pixel of each image claimed by two runs; a run reaching into an earlier run is not drawn.
    Unclaimed pixels are 0.

    >>> labels, overlaps = paint(2, 4, np.array([0, 0, 1, 1]), np.array([3, 1, 1, 2]),
    ...                          np.array([2, 1, 2, 1]), np.array([1, 2, 3, 4]))
    >>> labels.tolist(), overlaps.tolist()
    ([[2, 0, 1, 1], [3, 3, 0, 0]], [[1, 1]])
    """
    begin = np.asarray(image, np.int64) * n_pixels + start - 1
    order = np.argsort(begin, kind="stable")
    begin, label = begin[order], np.asarray(label)[order]
    end = begin + np.asarray(length)[order]
    reached = np.maximum.accumulate(end) if end.size else end
    clash = np.zeros(begin.size, bool)
    clash[1:] = begin[1:] < reached[:-1]
    first = np.flatnonzero(clash)
    first = first[np.unique(begin[first] // max(n_pixels, 1), return_index=True)[1]]
    overlaps = np.stack([begin[first] // n_pixels, begin[first] % n_pixels], axis=1)
    keep = ~clash
    begin, end, label = begin[keep], end[keep], label[keep]
    gaps = begin - np.concatenate([[0], end[:-1]])
    segments = np.empty(2 * begin.size + 1, np.int64)
    segments[0:-1:2] = gaps
    segments[1::2] = end - begin
    segments[-1] = n_images * n_pixels - (end[-1] if end.size else 0)
    values = np.zeros(segments.size, np.uint8)
    values[1::2] = label
    return np.repeat(values, segments).reshape(n_images, n_pixels), overlaps
