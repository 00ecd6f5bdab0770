"""The streaming submission writer: a CSV written batch by batch, appearing only when complete."""

from __future__ import annotations

import os
from types import TracebackType

import numpy as np

from ensemble.data.datafile import as_array
from ensemble.errors import EnsError
from ensemble.files.atomic import atomic_write
from ensemble.optionvalues import check_n_classes, check_path, short_repr
from ensemble.submission.check import check_image_shape
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.formats import get_format
from ensemble.submission.textids import check_text_ids, encode_text_ids, refuse_flat_text_ids


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
            refuse_flat_text_ids(texts)
            return np.asarray([int(t) for t in texts], np.int64)  # then checked as integer ids
        repeated = next((t for t in texts if t in self._seen or texts.count(t) > 1), None)
        if repeated is not None:
            raise EnsError(f"id {repeated!r} is written twice; each image once")
        self._seen.update(texts)
        return np.asarray(texts, dtype=str)
