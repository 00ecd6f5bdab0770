"""Image ids that are file stems, and images of mixed sizes, in submission CSVs.

The formats write and parse integer ids. Text ids pass through them as stand-ins: a batch is
encoded with ids 0..B-1 and each row's leading id is swapped for its stem; a CSV is read by
swapping each row's stem for a stand-in (its position among the expected images), parsed, and the
stand-ins in problem messages are swapped back. RLE rows of images of several sizes are parsed on
one canvas of the largest pixel count, then cut back to each image's size, with runs past an
image's last pixel reported on their line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ensemble.data.folder import id_problem, integer_ids, open_folder
from ensemble.data.sizes import describe_sizes, size_groups
from ensemble.errors import EnsError
from ensemble.submission.problems import Problems
from ensemble.submission.rle import unflatten

STAND_IN = 9 * 10**11  # 12 digits: a stand-in id never looks like a pixel count or a line number
_STAND_IN_TEXT = re.compile(r"\b9\d{11}\b")
_DIGITS = b"0123456789"


@dataclass(frozen=True)
class ImageIndex:
    """The images a CSV describes: their ids in order and their (H, W) sizes."""

    ids: tuple[str, ...]
    sizes: np.ndarray

    @property
    def uniform(self) -> tuple[int, int] | None:
        first = tuple(int(v) for v in self.sizes[0]) if len(self.sizes) else None
        return first if len(self.sizes) and (self.sizes == self.sizes[0]).all() else None

    def describe(self) -> str:
        return describe_sizes(size_groups(self.sizes))


def folder_index(path) -> ImageIndex:
    """The stems and sizes of an image folder (headers only)."""
    folder = open_folder(path)
    return ImageIndex(folder.stems, folder.sizes)


def check_text_ids(ids: Sequence[str]) -> str | None:
    """What makes these ids unfit for a CSV row, or None."""
    for text in ids:
        problem = id_problem(text)
        if problem:
            return f"id {text!r} {problem}"
    return None


def refuse_flat_text_ids(ids: Sequence[str]) -> None:
    """The flat format numbers images with integers: refuse text ids that are not plain
    non-negative integers (a stem like 007 or img_1 has to be renamed, or written as rle)."""
    bad = next((text for text in ids if not integer_ids([text])), None)
    if bad is not None:
        raise EnsError(
            f"the flat format numbers images with integers, but image id {bad!r} is not a plain "
            "non-negative integer; name the image files 0.png, 1.png, ... or write --format rle"
        )


def encode_text_ids(encode: Callable, ids: Sequence[str], labels: np.ndarray, n_classes: int) -> bytes:
    """`encode` a batch whose ids are text: rows are encoded with ids 0..B-1, then each row's
    leading id is replaced by its text.

    >>> from ensemble.submission import rlecsv
    >>> encode_text_ids(rlecsv.encode, ["a_1"], np.array([[[1, 0]]]), 2)
    b'a_1_1,1 1\\n'
    """
    texts = [str(i).encode() for i in ids]
    body = encode(np.arange(len(texts), dtype=np.int64), labels, n_classes)
    rows = []
    for line in body.split(b"\n")[:-1]:
        digits = len(line) - len(line.lstrip(_DIGITS))
        rows.append(texts[int(line[:digits])] + line[digits:])
    return b"\n".join(rows) + b"\n" if rows else b""


def row_id(fmt, line: bytes) -> bytes:
    """The id at the start of a row of format `fmt`: before the first comma (flat, or rle with a
    class column), or before the last '_' of the key before the first comma (rle per class)."""
    key = line.split(b",", 1)[0]
    if fmt.name == "flat" or fmt.convention.layout == "class-column":
        return key
    cut = key.rfind(b"_")
    return key if cut < 0 else key[:cut]


def index_from_rows(fmt, body: bytes, image_shape: tuple[int, int]) -> ImageIndex:
    """The ids a CSV names itself, in the order of their first rows (so a conversion keeps the
    file's order), all of `image_shape` (when no data gives them)."""
    names = dict.fromkeys(row_id(fmt, line).decode("utf-8", "replace") for line in body.split(b"\n") if line)
    stems = [name for name in names if id_problem(name) is None]
    return ImageIndex(tuple(stems), np.tile(np.asarray(image_shape, np.int64), (len(stems), 1)))


def has_text_ids(fmt, body: bytes) -> bool:
    """Whether the first row's id is not a plain number written without leading zeros (a CSV of
    image folder stems: `007` names the file 007.png, not image 7)."""
    first = body.split(b"\n", 1)[0]
    found = row_id(fmt, first)
    return bool(first) and not (found.isdigit() and integer_ids([found.decode()]))


def parse_text_ids(
    fmt,
    body: bytes,
    first_line: int,
    images: ImageIndex,
    n_classes: int,
    problems: Problems,
    complete: bool = True,
) -> tuple[np.ndarray, np.ndarray | list[np.ndarray]]:
    """Parse rows whose ids are stems of `images`; return (ids as text, labels in id order: one
    (N, H, W) array for one size, else a list of (H, W) arrays).

    Unknown ids are problems on their line; with `complete`, so is an image without rows."""
    where = {name.encode(): index for index, name in enumerate(images.ids)}
    lines = body.split(b"\n")[:-1]
    unknown: dict[bytes, int] = {}
    rows = []
    for number, line in enumerate(lines, start=first_line):
        found = row_id(fmt, line)
        if found in where:
            position = where[found]
        else:
            if found not in unknown:
                shown = found[:40].decode("utf-8", "replace")
                unfit = id_problem(found.decode("utf-8", "replace"))
                expected = f"is not one of the {len(images.ids)} images expected"
                what = f"{unfit}; ids go into CSV rows" if unfit else expected
                problems.add(number, f"id {shown!r} {what}")
                unknown[found] = len(where) + len(unknown)
            position = unknown[found]
        rows.append(str(STAND_IN + position).encode() + line[len(found) :])
    stand_in_body = np.frombuffer(b"\n".join(rows) + b"\n" if rows else b"", np.uint8)
    uniform = images.uniform
    shape = uniform or (1, int((images.sizes[:, 0] * images.sizes[:, 1]).max(initial=1)))
    found_problems = Problems(problems.limit)
    ids, labels = fmt.parse(stand_in_body, first_line, shape, n_classes, found_problems)
    _merge(problems, found_problems, images.ids, unknown)
    keep = (ids >= STAND_IN) & (ids < STAND_IN + len(images.ids))
    positions = ids[keep] - STAND_IN
    labels = labels[keep]
    if complete:
        missing = np.setdiff1d(np.arange(len(images.ids)), positions)
        for position in missing[: problems.limit]:
            problems.add(None, f"image {images.ids[position]!r} has no rows; every image needs its rows")
        problems.count_more(len(missing) - problems.limit)
    names = np.array([images.ids[p] for p in positions.tolist()], dtype=str)
    if uniform is not None:
        return names, labels
    return names, _cut(labels, positions, images, lines, first_line, fmt, problems)


def _cut(labels, positions, images: ImageIndex, lines, first_line, fmt, problems) -> list[np.ndarray]:
    """Canvas rows (N, 1, P) back to each image's (H, W), reporting runs past an image's end."""
    flat = labels.reshape(len(labels), labels[0].size if len(labels) else 0)
    out = []
    for row, position in zip(flat, positions.tolist(), strict=True):
        height, width = (int(v) for v in images.sizes[position])
        n_pixels = height * width
        if row[n_pixels:].any():
            problems.add(
                _first_row(lines, images.ids[position], first_line, fmt),
                f"image {images.ids[position]!r} is {height}x{width} ({n_pixels} pixels) but its runs "
                f"reach pixel {n_pixels + int(np.flatnonzero(row[n_pixels:])[-1]) + fmt.convention.start}",
            )
        out.append(unflatten(row[None, :n_pixels], (height, width), fmt.convention.order)[0])
    return out


def _first_row(lines, name: str, first_line: int, fmt) -> int:
    target = name.encode()
    return next(n for n, line in enumerate(lines, start=first_line) if row_id(fmt, line) == target)


def _merge(problems: Problems, found: Problems, ids: tuple[str, ...], unknown: dict[bytes, int]) -> None:
    """Add the problems of the stand-in parse with stand-ins written as the ids they stand for."""
    names = {position: text.decode("utf-8", "replace") for text, position in unknown.items()}

    def name(match: re.Match) -> str:
        position = int(match[0]) - STAND_IN
        return ids[position] if position < len(ids) else names.get(position, "?")

    for problem in found.found:
        problems.add(problem.line, _STAND_IN_TEXT.sub(name, problem.message))
    problems.count_more(found.total - len(found.found))
