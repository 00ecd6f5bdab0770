"""The run-length CSV. By default header `ImageId_ClassId,EncodedPixels` and one row
`<id>_<class>,<runs>` per image and class 1..C-1, runs as space-separated `start length` pairs
(see ensemble.submission.rle); an RleConvention changes pixel order, first pixel, layout and header.

In the class-column layout (`<id>,<class>,<runs>`) the writer also writes a row for every class
1..C-1, empty ones with empty runs; the reader takes a missing row as an empty class.
"""

from __future__ import annotations

import re

import numpy as np

from ensemble.submission.convention import DEFAULT_RLE, LAYOUT_ROWS, RleConvention
from ensemble.submission.numtext import COMMA, NEWLINE, NO_DIGITS, SPACE, format_ints, line_bounds, scan_ints
from ensemble.submission.problems import Problems
from ensemble.submission.rle import check_runs, describe_run, label_runs, paint, unflatten

_ID, _CLASS = rb"(0|[1-9]\d{0,11})", rb"(0|[1-9]\d{0,3})"  # integers as written, no leading zeros
_KEYS = {"per-class": re.compile(_ID + rb"_" + _CLASS), "class-column": re.compile(_ID + rb"," + _CLASS)}
_KEY_TEXT = {"per-class": ("`<id>_<class>`", "12_3"), "class-column": ("`<id>,<class>`", "12,3")}
_QUOTE = ord('"')
_ROWS_PER_CHUNK = 4096


def header(image_shape: tuple[int, int], n_classes: int, rle: RleConvention = DEFAULT_RLE) -> bytes:
    return rle.header_line + b"\n"


def matches(header_line: bytes, rle: RleConvention = DEFAULT_RLE) -> bool:
    return header_line == rle.header_line


def header_problem(
    header_line: bytes, image_shape: tuple[int, int], n_classes: int, rle: RleConvention = DEFAULT_RLE
) -> str | None:
    return None if header_line == rle.header_line else f"header must be {rle.header_line.decode()!r}"


def rows_per_image(n_classes: int, rle: RleConvention = DEFAULT_RLE) -> int | None:
    """Rows every image has: one per class 1..C-1, or None where rows of empty classes may be left out."""
    return n_classes - 1 if rle.layout == "per-class" else None


def encode(ids: np.ndarray, labels: np.ndarray, n_classes: int, rle: RleConvention = DEFAULT_RLE) -> bytes:
    """Rows for classes 1..C-1 of every image in the batch, image by image.

    >>> encode(np.array([7]), np.array([[[1, 1], [0, 1]]]), 3)
    b'7_1,1 1 3 2\\n7_2,\\n'
    >>> encode(np.array([7]), np.array([[[1, 1], [0, 1]]]), 3, RleConvention("row", 0, "class-column"))
    b'7,1,0 2 3 1\\n7,2,\\n'
    """
    ids = np.asarray(ids, np.int64)
    per_image = n_classes - 1
    runs = label_runs(labels, rle.order)
    keep = runs.label > 0
    row = runs.image[keep] * per_image + runs.label[keep].astype(np.int64) - 1
    order = np.argsort(row, kind="stable")
    row, start, length = row[order], runs.start[keep][order], runs.length[keep][order]
    n_rows = len(ids) * per_image
    n_runs = np.bincount(row, minlength=n_rows)
    n_tokens = 2 + np.maximum(2 * n_runs, 1)
    offset = np.concatenate([[0], np.cumsum(n_tokens)[:-1]]).astype(np.int64)
    values = np.empty(int(n_tokens.sum()), np.int64)
    terminators = np.full(values.size, SPACE, np.uint8)
    values[offset] = np.repeat(ids, per_image)
    terminators[offset] = ord("_") if rle.layout == "per-class" else COMMA
    values[offset + 1] = np.tile(np.arange(1, n_classes), len(ids))
    terminators[offset + 1] = COMMA
    values[offset[n_runs == 0] + 2] = NO_DIGITS
    first_run = np.concatenate([[0], np.cumsum(n_runs)[:-1]]).astype(np.int64)
    at = offset[row] + 2 + 2 * (np.arange(row.size) - first_run[row])
    values[at] = start if rle.start == 1 else start + (rle.start - 1)
    values[at + 1] = length
    terminators[offset + n_tokens - 1] = NEWLINE
    return format_ints(values, terminators).tobytes()


def parse(
    body: np.ndarray,
    first_line: int,
    image_shape: tuple[int, int],
    n_classes: int,
    problems: Problems,
    rle: RleConvention = DEFAULT_RLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Parse newline-terminated rows; return (ids sorted ascending, labels (N, H, W) uint8).

    Malformed keys and runs, repeated (or, per class, missing) (image, class) rows and pixels
    claimed by two classes go to `problems`, numbered from `first_line`.
    """
    n_pixels = image_shape[0] * image_shape[1]
    starts, ends = line_bounds(body)
    if not starts.size:
        return np.empty(0, np.int64), np.empty((0, *image_shape), np.uint8)
    lines = np.arange(starts.size) + first_line
    n_separators = rle.n_fields - 1
    commas = np.append(np.flatnonzero(body == COMMA), body.size)
    first_comma = np.searchsorted(commas, starts)
    fields_ok = np.searchsorted(commas, ends) - first_comma == n_separators
    last_comma = commas[np.minimum(first_comma + n_separators - 1, commas.size - 1)]
    comma = np.where(fields_ok, last_comma, ends)
    expected = "one comma" if n_separators == 1 else f"{n_separators} commas"
    problems.add_rows(
        ~fields_ok,
        lines,
        lambda r: (
            "empty line"
            if starts[r] == ends[r]
            else f"expected {expected}, as in `{LAYOUT_ROWS[rle.layout]}`"
        ),
    )

    image_id, cls = _parse_keys(body, starts, comma, fields_ok, n_classes, lines, problems, rle.layout)
    keys_readable = not problems  # a missing row is only worth reporting when every key was read
    run_row, start, length, runs_ok = _parse_runs(body, starts, ends, comma, fields_ok, lines, problems)
    if rle.start != 1:
        start = start + (1 - rle.start)
    runs_ok &= ~_report_bad_runs(run_row, start, length, n_pixels, rle.start, lines, problems)

    ids = np.unique(image_id[image_id >= 0])
    if keys_readable and rle.layout == "per-class":
        _check_complete(ids, image_id, cls, n_classes, lines, problems)
    row_ok = (image_id >= 0) & runs_ok
    use = row_ok[run_row]
    image = np.searchsorted(ids, image_id[run_row[use]])
    used_rows = run_row[use]
    labels, overlaps = paint(ids.size, n_pixels, image, start[use], length[use], cls[used_rows])
    for image_index, pixel in overlaps[: problems.limit]:
        hit = (image == image_index) & (start[use] - 1 <= pixel) & (pixel < start[use] - 1 + length[use])
        row_a, row_b = used_rows[hit].min(), used_rows[hit].max()
        problems.add(
            int(lines[row_b]),
            f"image {ids[image_index]} pixel {pixel + rle.start} is claimed by class {cls[row_a]} "
            f"(line {lines[row_a]}) and class {cls[row_b]}; a pixel can have only one class",
        )
    problems.count_more(len(overlaps) - problems.limit)
    return ids, unflatten(labels, image_shape, rle.order)


def _report_bad_runs(run_row, start, length, n_pixels, first, lines, problems) -> np.ndarray:
    """Report the first malformed run of every row; return the mask of rows holding one."""
    codes = check_runs(run_row, start, length, n_pixels)
    bad_run = np.flatnonzero(codes)
    rows, first_of_row = np.unique(run_row[bad_run], return_index=True)
    first_bad = dict(zip(rows.tolist(), bad_run[first_of_row].tolist(), strict=True))
    bad = np.zeros(lines.size, bool)
    bad[rows] = True

    def describe(row: int) -> str:
        k = first_bad[row]
        return describe_run(int(codes[k]), int(start[k]), int(length[k]), n_pixels, first)

    problems.add_rows(bad, lines, describe)
    return bad


def _check_complete(ids, image_id, cls, n_classes, lines, problems) -> None:
    """Every image must have exactly one row for each class 1..C-1."""
    rows = np.flatnonzero(image_id >= 0)
    image = np.searchsorted(ids, image_id[rows])
    present = np.zeros((ids.size, n_classes), bool)
    present[image, cls[rows]] = True
    _, first = np.unique(image, return_index=True)
    missing_image, missing_class = np.nonzero(~present[:, 1:])
    problems.add_rows(
        np.ones(missing_image.size, bool),
        lines[rows[first[missing_image]]],
        lambda k: (
            f"image {ids[missing_image[k]]} has no row for class {missing_class[k] + 1}; "
            f"every image needs one row per class 1..{n_classes - 1}"
        ),
    )


def _parse_keys(body, starts, comma, fields_ok, n_classes, lines, problems, layout):
    """Return per-row image id and class (-1 where the key is malformed, repeated or out of range).

    The key is everything before the runs: `<id>_<class>`, or `<id>,<class>` in the class-column layout.
    """
    image_id = np.full(starts.size, -1, np.int64)
    cls = np.full(starts.size, -1, np.int64)
    seen: dict[tuple[int, int], int] = {}
    raw = body.tobytes()
    pattern, (form, example) = _KEYS[layout], _KEY_TEXT[layout]
    for row in np.flatnonzero(fields_ok).tolist():
        key = raw[starts[row] : comma[row]]
        match = pattern.fullmatch(key)
        line = int(lines[row])
        if not match:
            text = key[:30].decode("utf-8", "replace")
            problems.add(
                line, f"key {text!r} is not {form} with integers, e.g. {example!r} (no leading zeros)"
            )
            continue
        pair = (int(match[1]), int(match[2]))
        if not 1 <= pair[1] < n_classes:
            problems.add(
                line,
                f"class {pair[1]} in key {key.decode()!r} is outside 1..{n_classes - 1} "
                "(class 0 is implied; pass --n-classes if there are more classes)",
            )
        elif pair in seen:
            problems.add(line, f"key {key.decode()!r} repeats line {seen[pair]}")
        else:
            seen[pair] = line
            image_id[row], cls[row] = pair
    return image_id, cls


def _parse_runs(body, starts, ends, comma, fields_ok, lines, problems):
    """Tokenise every value field at once; return (run row, start, length, per-row ok mask)."""
    value_start = np.where(fields_ok, comma + 1, ends)
    value_end = ends.copy()
    quoted = (
        (value_end - value_start >= 2)
        & (body[np.minimum(value_start, body.size - 1)] == _QUOTE)
        & (body[np.maximum(value_end - 1, 0)] == _QUOTE)
    )
    value_start = value_start + quoted
    value_end = value_end - quoted
    token_row, values = _scan_values(body, starts, ends, value_start, value_end)
    n_tokens = np.bincount(token_row, minlength=starts.size)
    n_bad = np.bincount(token_row, weights=values < 0, minlength=starts.size)
    ok = fields_ok & (n_tokens % 2 == 0) & (n_bad == 0)
    problems.add_rows(
        fields_ok & (n_bad > 0),
        lines,
        lambda r: "runs must be space-separated non-negative integers `start length ...`",
    )
    problems.add_rows(
        fields_ok & (n_bad == 0) & (n_tokens % 2 == 1),
        lines,
        lambda r: f"{n_tokens[r]} numbers do not make `start length` pairs",
    )
    pairs = values[ok[token_row]].reshape(-1, 2)
    run_row = token_row[ok[token_row]][0::2]
    return run_row, pairs[:, 0], pairs[:, 1], ok


def _scan_values(body, starts, ends, value_start, value_end):
    """Integer tokens inside the value fields, a few thousand lines at a time: (row, value)."""
    rows, values = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for first in range(0, starts.size, _ROWS_PER_CHUNK):
        last = min(first + _ROWS_PER_CHUNK, starts.size)
        offset = starts[first]
        chunk = body[offset : ends[last - 1] + 1]
        mark = np.zeros(chunk.size + 1, np.int8)
        mark[value_start[first:last] - offset] += 1
        mark[value_end[first:last] - offset] -= 1
        inside = np.cumsum(mark[:-1], dtype=np.int8).view(bool)
        token_start, _, chunk_values = scan_ints(chunk, inside & (chunk != SPACE))
        rows.append(np.searchsorted(ends[first:last] - offset, token_start) + first)
        values.append(chunk_values)
    return np.concatenate(rows), np.concatenate(values)
