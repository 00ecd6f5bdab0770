"""Submission CSVs in one call: a writer, a validating reader, conversion (`SubmissionWriter` streams).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "sub.csv"
>>> labels = np.array([[[1, 2, 2]], [[0, 4, 1]]], np.uint8)
>>> write_submission(path, [0, 1], labels, "rle", 5)
>>> ids, back, fmt = read_submission(path, (1, 3), 5)
>>> ids.tolist(), fmt, bool((back == labels).all())
([0, 1], 'rle', True)
>>> by_class = RleConvention(layout="class-column")        # ImageId,ClassId,EncodedPixels
>>> write_submission(path, [0, 1], labels, "rle", 5, rle=by_class)
>>> bool((read_submission(path, (1, 3), 5, rle=by_class)[1] == labels).all())
True
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ensemble.course import IMAGE_SHAPE
from ensemble.data.datafile import as_array
from ensemble.data.folder import open_folder
from ensemble.data.sizes import size_groups
from ensemble.errors import EnsError
from ensemble.files.outputs import refuse_overwrite
from ensemble.optionvalues import check_path
from ensemble.submission.check import parse_submission
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.formats import detect_format, get_format
from ensemble.submission.textids import ImageIndex
from ensemble.submission.writer import SubmissionWriter

_IMAGES_PER_BATCH = 512


def write_submission(
    path: str | os.PathLike,
    ids,
    labels: np.ndarray,
    fmt: str,
    n_classes: int,
    *,
    rle: RleConvention = DEFAULT_RLE,
) -> None:
    """Write all `labels` (N, H, W) with their `ids` (N,) in one call, atomically (`rle` files
    under the convention `rle`). It reads no file, so the guard checks only that `path` can take one."""
    refuse_overwrite({"path": check_path(path, "submission path")}, {})
    labels = as_array(labels, "labels")
    if labels.ndim != 3:
        raise EnsError(f"labels have shape {labels.shape}; expected (N, H, W)")
    ids = as_array(ids, "ids", " of shape (N,)")
    if ids.shape != labels.shape[:1]:
        raise EnsError(f"got {ids.shape} ids for {len(labels)} label maps; give one id per image")
    with SubmissionWriter(path, fmt, labels.shape[1:], n_classes, rle=rle) as writer:
        for start in range(0, len(labels), _IMAGES_PER_BATCH):
            stop = start + _IMAGES_PER_BATCH
            writer.write(ids[start:stop], labels[start:stop])


def read_submission(
    path: str | os.PathLike,
    image_shape: tuple[int, int] | None,
    n_classes: int,
    images: ImageIndex | None = None,
    complete: bool = True,
    *,
    rle: RleConvention = DEFAULT_RLE,
) -> tuple[np.ndarray, np.ndarray | list[np.ndarray], str]:
    """Return (ids (N,) int64, labels (N, H, W) uint8, format name) of a valid CSV.

    The format is detected from the header, an rle file read under the convention `rle`; rle ids
    come back sorted (text ids in the order of their first rows). With `images` (an image folder's
    stems and sizes) ids are stems in the folder's order, and labels of several sizes a list of
    (H, W) arrays. An invalid file raises EnsError naming its first problem.
    """
    parsed = parse_submission(
        path, image_shape, n_classes, limit=1, rle=rle, images=images, complete=complete
    )
    if parsed.problems:
        more = f" (and {parsed.n_hidden} more)" if parsed.n_hidden else ""
        raise EnsError(
            f"submission {str(parsed.path)!r} is invalid: {parsed.problems[0]}{more}; "
            f"run `ens check {parsed.path}` to list the problems"
        )
    return parsed.ids, parsed.labels, parsed.format


def convert_submission(
    source: str | os.PathLike,
    target: str | os.PathLike,
    to: str,
    image_shape: tuple[int, int] | None,
    n_classes: int,
    *,
    rle: RleConvention = DEFAULT_RLE,
    to_rle: RleConvention = DEFAULT_RLE,
    data: str | os.PathLike | None = None,
) -> tuple[str, int]:
    """Validate `source` (an rle one under `rle`), write it to `target` in format `to` (rle under
    `to_rle`); return (source format, images).

    Renumbering the pixels of an rle file (another order or start, or flat) needs each image's
    size: `data`, the image folder the CSV describes (its stems are the ids, its images give the
    sizes), or one `image_shape` for all. Without either, the course's size is assumed where no
    pixel is renumbered (a flat SOURCE's header is checked against it)."""
    get_format(to, to_rle)
    if data is not None and image_shape is not None:
        raise EnsError("--data gives each image's size and --shape one size for all; pass one of them")
    folder = open_folder(data) if data is not None else None
    refuse_overwrite({"TARGET": target}, {"SOURCE": source, **(folder.input_paths() if folder else {})})
    if folder is None and image_shape is None:
        _refuse_renumbering(source, to, rle, to_rle)
        image_shape = IMAGE_SHAPE
    if folder is not None:
        index = ImageIndex(folder.stems, folder.sizes)
        ids, labels, fmt = read_submission(source, None, n_classes, images=index, rle=rle)
    else:
        ids, labels, fmt = read_submission(source, image_shape, n_classes, rle=rle)
    if isinstance(labels, list):
        _write_by_size(target, ids, labels, to, n_classes, to_rle)
    else:
        write_submission(target, ids, labels, to, n_classes, rle=to_rle)
    return fmt, len(ids)


def _refuse_renumbering(source, to: str, rle: RleConvention, to_rle: RleConvention) -> None:
    """Refuse, when no size was given, to renumber the pixels of an rle SOURCE: another order or
    start, or a flat TARGET (whose header numbers every pixel of one size)."""
    if not Path(source).is_file():
        return  # the reader says what is wrong with it
    with open(source, "rb") as handle:
        header = handle.readline(1 << 20).rstrip(b"\r\n")
    source_format = detect_format(header, rle)
    if source_format is None or source_format.name != "rle":
        return
    if to == "flat":
        what = "writing flat labels (one column per pixel of one size)"
    elif (rle.order, rle.start) != (to_rle.order, to_rle.start):
        what = (
            f"renumbering {rle.order}-major {rle.start}-indexed runs as "
            f"{to_rle.order}-major {to_rle.start}-indexed ones"
        )
    else:
        return
    raise EnsError(
        f"{what} needs each image's size; pass --data IMAGES_DIR (the folder the CSV describes) or "
        "--shape HxW (one size for all)"
    )


def _write_by_size(target, ids: np.ndarray, labels: list[np.ndarray], to: str, n_classes: int, rle) -> None:
    """Write label maps of several sizes, one size after another (in id order inside each), as
    `ens predict` writes them."""
    sizes = np.array([label.shape for label in labels], np.int64).reshape(-1, 2)
    groups = size_groups(sizes)
    shape = groups[0].shape if len(groups) == 1 else None
    with SubmissionWriter(target, to, shape, n_classes, rle=rle) as writer:
        for group in groups:
            for start in range(0, len(group.positions), _IMAGES_PER_BATCH):
                chosen = group.positions[start : start + _IMAGES_PER_BATCH]
                writer.write(ids[chosen], np.stack([labels[k] for k in chosen.tolist()]))
