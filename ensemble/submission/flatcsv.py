"""The course's flat CSV: header `id,0,1,...,P-1`, then one row `id,label,label,...` per image,
labels flattened row-major (C order). Written and parsed as numpy byte buffers, never per value.
"""

from __future__ import annotations

import numpy as np

from ensemble.submission.numtext import COMMA, MAX_DIGITS, NEWLINE, ZERO, format_ints, line_bounds, scan_ints
from ensemble.submission.problems import Problems

_ROWS_PER_CHUNK = 256


def header(image_shape: tuple[int, int], n_classes: int) -> bytes:
    """`id,0,1,...,H*W-1` and a newline."""
    n_pixels = image_shape[0] * image_shape[1]
    return b",".join([b"id", *(str(i).encode() for i in range(n_pixels))]) + b"\n"


def matches(header_line: bytes) -> bool:
    """Whether a header line belongs to this format: `id,` and a pixel number (its exact columns are
    checked later), so an RLE header such as `id,predicted` is not taken for a flat one."""
    return header_line.startswith(b"id,") and header_line[3:4].isdigit()


def header_problem(header_line: bytes, image_shape: tuple[int, int], n_classes: int) -> str | None:
    """Say how `header_line` differs from the header expected for `image_shape`, or None."""
    expected = header(image_shape, n_classes)[:-1]
    if header_line == expected:
        return None
    got = header_line.split(b",")[1:]
    n_pixels = image_shape[0] * image_shape[1]
    if len(got) != n_pixels:
        return (
            f"header has {len(got)} pixel columns, expected {n_pixels} for "
            f"{image_shape[0]}x{image_shape[1]} images; give the image size with --shape HxW"
        )
    column = next(i for i, name in enumerate(got) if name != str(i).encode())
    return f"header column {column + 2} is {_show(got[column])}, expected '{column}'"


def encode(ids: np.ndarray, labels: np.ndarray, n_classes: int) -> bytes:
    """The rows of a batch: `ids` (B,) non-negative ints, `labels` (B, H, W) non-negative ints.

    Labels below 10 take a fast path that lays out one fixed-width byte row per image.

    >>> encode(np.array([0, 12]), np.array([[[1, 0], [3, 4]], [[2, 2], [0, 1]]]), 5)
    b'0,1,0,3,4\\n12,2,2,0,1\\n'
    """
    ids = np.asarray(ids, np.int64)
    flat = np.asarray(labels).reshape(len(ids), -1)
    if flat.size and int(flat.max()) >= 10:
        table = np.concatenate([ids[:, None], flat.astype(np.int64)], axis=1)
        terminators = np.full(table.shape, COMMA, np.uint8)
        terminators[:, -1] = NEWLINE
        return format_ints(table, terminators.ravel()).tobytes()
    n_pixels = flat.shape[1]
    body = np.empty((len(ids), 2 * n_pixels + 1), np.uint8)
    body[:, 0 : 2 * n_pixels : 2] = COMMA
    body[:, 1 : 2 * n_pixels : 2] = flat.astype(np.uint8) + ZERO
    body[:, -1] = NEWLINE
    id_text = [str(i).encode() for i in ids.tolist()]
    return b"".join(part for pair in zip(id_text, body, strict=True) for part in pair)


def parse(
    body: np.ndarray,
    first_line: int,
    image_shape: tuple[int, int],
    n_classes: int,
    problems: Problems,
) -> tuple[np.ndarray, np.ndarray]:
    """Parse newline-terminated rows; return (ids, labels (N, H, W) uint8) with -1 ids on bad rows.

    Bad rows (field count, non-integers, labels outside 0..C-1) and ids that are not unique and
    increasing in file order go to `problems`, numbered from `first_line`.
    """
    n_pixels = image_shape[0] * image_shape[1]
    starts, ends = line_bounds(body)
    ids = np.full(starts.size, -1, np.int64)
    labels = np.zeros((starts.size, n_pixels), np.uint8)
    lines = np.arange(starts.size) + first_line
    bounds = _chunk_bounds(ends - starts)
    for first, last in zip(bounds[:-1], bounds[1:], strict=True):
        offset = starts[first]
        chunk = body[offset : ends[last - 1] + 1]
        line_ends = ends[first:last] - offset
        parsed = _parse_regular(chunk, line_ends, n_pixels, n_classes)
        good, chunk_ids, chunk_labels = parsed or _parse_any(chunk, line_ends, n_pixels, n_classes)
        ids[first:last][good] = chunk_ids
        labels[first:last][good] = chunk_labels
        problems.add_rows(
            ~good,
            lines[first:last],
            lambda row, f=first: _describe(body[starts[f + row] : ends[f + row]], n_pixels, n_classes),
        )
    _check_id_order(ids, lines, problems)
    return ids, labels.reshape(-1, *image_shape)


def _chunk_bounds(line_lengths: np.ndarray) -> np.ndarray:
    """Row ranges to parse at once: at most _ROWS_PER_CHUNK rows, split where the line length
    changes (ids gaining a digit) unless lengths vary everywhere."""
    regular = np.arange(0, line_lengths.size, _ROWS_PER_CHUNK)
    changes = np.flatnonzero(np.diff(line_lengths)) + 1
    if changes.size > regular.size:
        changes = changes[:0]
    return np.unique(np.concatenate([regular, changes, [line_lengths.size]]))


Parsed = tuple[np.ndarray, np.ndarray, np.ndarray]


def _parse_regular(chunk: np.ndarray, line_ends: np.ndarray, n_pixels: int, n_classes: int) -> Parsed | None:
    """Fast path for the usual chunk: ids of one length and one-digit labels, so the lines form a
    fixed-width byte table. Returns (good rows, ids, labels), or None unless every row is fine."""
    width = 2 * n_pixels + 1
    id_width = int(line_ends[0]) - 2 * n_pixels
    if not 1 <= id_width <= MAX_DIGITS or chunk.size != line_ends.size * (id_width + width):
        return None
    table = chunk.reshape(line_ends.size, id_width + width)
    id_digits = table[:, :id_width] - np.uint8(ZERO)
    label_digits = table[:, id_width + 1 : -1 : 2] - np.uint8(ZERO)
    regular = (
        (table[:, -1] == NEWLINE).all()
        and (table[:, id_width:-1:2] == COMMA).all()
        and (id_digits < 10).all()
        and (id_width == 1 or (id_digits[:, 0] > 0).all())
        and (label_digits < min(n_classes, 10)).all()
    )
    if not regular:
        return None
    ids = id_digits.astype(np.int64) @ (10 ** np.arange(id_width - 1, -1, -1, dtype=np.int64))
    return np.ones(line_ends.size, bool), ids, label_digits


def _parse_any(chunk: np.ndarray, line_ends: np.ndarray, n_pixels: int, n_classes: int) -> Parsed:
    """General vectorised parse of whole lines of any integers; bad rows are marked, not parsed."""
    n_lines = line_ends.size
    token_starts, token_ends, values = scan_ints(chunk, (chunk != COMMA) & (chunk != NEWLINE))
    values[(token_ends - token_starts > 1) & (chunk[token_starts] == ZERO)] = -1  # leading zeros
    line_of = np.searchsorted(line_ends, token_starts)
    n_tokens = np.bincount(line_of, minlength=n_lines)
    n_bad = np.bincount(line_of, weights=values < 0, minlength=n_lines)
    n_commas = np.bincount(np.searchsorted(line_ends, np.flatnonzero(chunk == COMMA)), minlength=n_lines)
    good = (n_tokens == n_pixels + 1) & (n_commas == n_pixels) & (n_bad == 0)
    table = values[good[line_of]].reshape(-1, n_pixels + 1)
    in_range = table[:, 1:].max(axis=1, initial=0) < n_classes
    good[np.flatnonzero(good)[~in_range]] = False
    table = table[in_range]
    return good, table[:, 0], table[:, 1:]


def _describe(line: np.ndarray, n_pixels: int, n_classes: int) -> str:
    """Explain in words why one row is malformed (runs only for the few rows reported)."""
    fields = line.tobytes().split(b",")
    if not line.size:
        return "empty line; every row must be `id,label,...`"
    if len(fields) != n_pixels + 1:
        return f"row has {len(fields)} fields, expected {n_pixels + 1} (the id and {n_pixels} labels)"
    if not _is_int(fields[0]):
        return f"id {_show(fields[0])} is not a non-negative integer without leading zeros"
    for column, field in enumerate(fields[1:]):
        if not _is_int(field) or int(field) >= n_classes:
            return (
                f"label {_show(field)} in column '{column}' is not a class index 0..{n_classes - 1}; "
                "labels must be integers without leading zeros (pass --n-classes if there are more classes)"
            )
    return "malformed row"


def _check_id_order(ids: np.ndarray, lines: np.ndarray, problems: Problems) -> None:
    """Ids of the good rows must be unique and increase in file order."""
    rows = np.flatnonzero(ids >= 0)
    seq = ids[rows]
    _, first, inverse = np.unique(seq, return_index=True, return_inverse=True)
    repeated = first[inverse] != np.arange(seq.size)
    backwards = np.zeros(seq.size, bool)
    backwards[1:] = seq[1:] < seq[:-1]

    def describe(k: int) -> str:
        if repeated[k]:
            return f"id {seq[k]} repeats the id of line {lines[rows[first[inverse[k]]]]}; ids must be unique"
        return f"id {seq[k]} comes after id {seq[k - 1]}; ids must increase in file order"

    problems.add_rows(repeated | backwards, lines[rows], describe)


def _is_int(field: bytes) -> bool:
    """A non-negative integer as written by ens: digits, no leading zeros."""
    return field.isdigit() and len(field) <= MAX_DIGITS and (len(field) == 1 or field[:1] != b"0")


def _show(field: bytes) -> str:
    return "'" + repr(field[:20])[2:-1] + ("…" if len(field) > 20 else "") + "'"
