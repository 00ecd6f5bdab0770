"""Submission CSVs: a streaming atomic writer, a one-call writer, a validating reader, conversion.

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
from types import TracebackType

import numpy as np

from ensemble.course import IMAGE_SHAPE
from ensemble.data.datafile import as_array
from ensemble.data.folder import integer_ids, open_folder
from ensemble.data.sizes import size_groups
from ensemble.errors import EnsError
from ensemble.files.atomic import atomic_write
from ensemble.files.outputs import refuse_overwrite
from ensemble.optionvalues import check_n_classes, check_path, short_repr
from ensemble.submission.check import check_image_shape, parse_submission
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.formats import detect_format, get_format
from ensemble.submission.textids import ImageIndex, check_text_ids, encode_text_ids

_IMAGES_PER_BATCH = 512


class SubmissionWriter:
    """Write a CSV batch by batch; the file appears only when the `with` block succeeds.

    ``with SubmissionWriter(path, "flat", (64, 128), 5) as w: w.write(ids, labels)``
    Ids are non-negative integers increasing across all batches, or (image folder stems) distinct
    text; labels (B, H, W) in 0..C-1. An `image_shape` of None lets each batch have its own size
    (rle only: the flat header fixes one size). `rle` is the convention of an `rle` file (the
    course's by default).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fmt: str,
        image_shape: tuple[int, int] | None,
        n_classes: int,
        *,
        rle: RleConvention = DEFAULT_RLE,
    ) -> None:
        self.path = check_path(path, "submission path")
        self.format = get_format(fmt, rle)
        self.n_classes = check_n_classes(n_classes, "n_classes")
        if image_shape is None and self.format.name == "flat":
            raise EnsError(
                "the flat format has one image size (its header numbers the pixels) but the images have "
                "several; write --format rle, or predict one size at a time"
            )
        self.image_shape = None if image_shape is None else check_image_shape(image_shape)
        self.n_images = 0
        self._last_id = -1
        self._seen: set[str] = set()
        self._context = None
        self._handle = None

    def __enter__(self) -> SubmissionWriter:
        self._context = atomic_write(self.path, "wb")
        self._handle = self._context.__enter__()
        try:
            self._handle.write(self.header())
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def header(self) -> bytes:
        """The CSV's header line."""
        return self.format.header(self.image_shape or (1, 1), self.n_classes)

    def write(self, ids, labels: np.ndarray) -> None:
        """Append one batch: `ids` (B,) and `labels` (B, H, W) integer class indices."""
        if self._handle is None:
            raise EnsError("SubmissionWriter.write was called outside its `with` block")
        self._handle.write(self.encode(ids, labels))

    def encode(self, ids, labels: np.ndarray) -> bytes:
        """The CSV rows of one batch, checked like `write` (ids increase across calls); also usable
        outside the `with` block, to encode rows kept elsewhere (the shards of a resumable run)."""
        ids, labels = self._validate(ids, labels)
        if not len(ids):
            return b""
        if ids.dtype.kind == "U":
            rows = encode_text_ids(self.format.encode, ids.tolist(), labels, self.n_classes)
        else:
            rows = self.format.encode(ids, labels, self.n_classes)
            self._last_id = int(ids[-1])
        self.n_images += len(ids)
        return rows

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        context, self._context, self._handle = self._context, None, None
        return context.__exit__(exc_type, exc, traceback)

    def _validate(self, ids, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, labels = as_array(ids, "ids", " of shape (B,)"), as_array(labels, "labels")
        shape = self.image_shape or labels.shape[1:]
        if labels.ndim != 3 or labels.shape[1:] != shape or ids.shape != labels.shape[:1]:
            expected = "(B, H, W)" if self.image_shape is None else f"(B, {shape[0]}, {shape[1]})"
            raise EnsError(
                f"got ids {ids.shape} and labels {labels.shape}; expected ids (B,) and labels {expected}"
            )
        if ids.size and ids.dtype.kind in "UO":
            ids = self._text_ids(ids)
            if ids.dtype.kind == "U":
                return ids, self._checked_labels(labels)
        if ids.size and ids.dtype.kind not in "iu" or labels.size and labels.dtype.kind not in "iu":
            raise EnsError(
                f"ids ({ids.dtype}) and labels ({labels.dtype}) must be integer arrays; "
                "take argmax over classes first"
            )
        ids = ids.astype(np.int64)
        if ids.size and (ids[0] <= self._last_id or np.any(np.diff(ids) <= 0)):
            raise EnsError(
                f"ids must be non-negative and increase across batches; got {ids[:5].tolist()}... "
                f"after id {self._last_id}"
            )
        return ids, self._checked_labels(labels)

    def _checked_labels(self, labels: np.ndarray) -> np.ndarray:
        if labels.size and labels.dtype.kind not in "iu":
            raise EnsError(
                f"labels ({labels.dtype}) must be an integer array; take argmax over classes first"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise EnsError(f"labels span {labels.min()}..{labels.max()}; allowed are 0..{self.n_classes - 1}")
        return labels.astype(np.uint8, copy=False)

    def _text_ids(self, ids: np.ndarray) -> np.ndarray:
        """Stems as ids: distinct across batches and fit for a CSV row; the flat format needs
        integers, so there they must be plain non-negative integers."""
        kinds = str | int | np.integer
        bad = [i for i in ids.tolist() if isinstance(i, bool | np.bool_) or not isinstance(i, kinds)]
        if bad:
            raise EnsError(
                f"id {short_repr(bad[0])} ({type(bad[0]).__name__}) is not an image id; ids are non-negative "
                "integers or text (image file stems)"
            )
        texts = [str(i) for i in ids.tolist()]
        problem = check_text_ids(texts)
        if problem:
            raise EnsError(f"{problem}; ids go into CSV rows, so rename the image file")
        if self.format.name == "flat":
            if not integer_ids(texts):
                bad = next(t for t in texts if not integer_ids([t]))
                raise EnsError(
                    f"the flat format numbers images with integers, but image id {bad!r} is not a plain "
                    "non-negative integer; name the image files 0.png, 1.png, ... or write --format rle"
                )
            return np.asarray([int(t) for t in texts], np.int64)  # then checked as integer ids
        repeated = next((t for t in texts if t in self._seen or texts.count(t) > 1), None)
        if repeated is not None:
            raise EnsError(f"id {repeated!r} is written twice; each image once")
        self._seen.update(texts)
        return np.asarray(texts, dtype=str)


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
