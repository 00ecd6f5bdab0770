"""The course data file: `training_set` (N, 2, H, W), `test_set` (M, H, W), optional `test_masks`.

Arrays are validated and converted to uint8 chunk by chunk, so the real float64 file (about 1 GB)
never sits in memory as float64, and test images can be streamed in batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.npz import ArrayHeader, check_budget, iter_rows, read_headers
from ensemble.errors import EnsError
from ensemble.files.hashing import cached_file_sha256
from ensemble.optionvalues import short_repr

TRAIN_KEY = "training_set"
TEST_KEY = "test_set"
TEST_MASKS_KEY = "test_masks"
_CHUNK_ROWS = 256


@dataclass(frozen=True)
class DataFile:
    """A validated handle on a course-format npz; arrays are read on demand."""

    path: Path
    n_train: int
    n_test: int
    height: int
    width: int
    has_test: bool
    has_test_masks: bool

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def sha256(self) -> str:
        """Content hash of the file, for manifests and cache keys."""
        return cached_file_sha256(self.path)

    def load_train(self, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (images, masks), both uint8 (N, H, W)."""
        check_budget(2 * self.n_train * self.height * self.width, f"the uint8 {TRAIN_KEY!r}", self.path)
        images = np.empty((self.n_train, self.height, self.width), np.uint8)
        masks = np.empty_like(images)
        start = 0
        for chunk in iter_rows(self.path, TRAIN_KEY, _CHUNK_ROWS):
            stop = start + len(chunk)
            images[start:stop] = _pixels(chunk[:, 0], TRAIN_KEY, start, "[:, 0] (images)")
            masks[start:stop] = _labels(chunk[:, 1], TRAIN_KEY, start, "[:, 1] (masks)", n_classes)
            start = stop
        return images, masks

    def iter_test_images(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield the test images as uint8 (B, H, W) batches in file order."""
        self._require(TEST_KEY)
        start = 0
        for chunk in iter_rows(self.path, TEST_KEY, batch_size):
            yield _pixels(chunk, TEST_KEY, start, "")
            start += len(chunk)

    def load_test_images(self) -> np.ndarray:
        """Return all test images as uint8 (M, H, W)."""
        self._require(TEST_KEY)
        check_budget(2 * self.n_test * self.height * self.width, f"the uint8 {TEST_KEY!r}", self.path)
        parts = list(self.iter_test_images(_CHUNK_ROWS))
        return np.concatenate(parts) if parts else np.empty((0, self.height, self.width), np.uint8)

    def load_test_masks(self, n_classes: int | None = None) -> np.ndarray:
        """Return the test masks as uint8 (M, H, W); only synthetic files carry them."""
        if not self.has_test_masks:
            raise EnsError(
                f"{str(self.path)!r} has no {TEST_MASKS_KEY!r} array, so the test set cannot be "
                "scored offline; score the validation split instead (--split val)"
            )
        check_budget(2 * self.n_test * self.height * self.width, f"the uint8 {TEST_MASKS_KEY!r}", self.path)
        parts = []
        start = 0
        for chunk in iter_rows(self.path, TEST_MASKS_KEY, _CHUNK_ROWS):
            parts.append(_labels(chunk, TEST_MASKS_KEY, start, "", n_classes))
            start += len(chunk)
        return np.concatenate(parts) if parts else np.empty((0, *self.image_shape), np.uint8)

    def input_paths(self) -> dict[str, Path]:
        """The file a run reads, for the overwrite guard."""
        return {"--data": self.path}

    def _require(self, key: str) -> None:
        if not self.has_test:
            raise EnsError(f"{str(self.path)!r} has no {key!r} array; add one or use --split val")


def open_data(path: str | Path) -> DataFile:
    """Check the archive's keys, ranks and shapes and return a DataFile; reads no pixels."""
    path = Path(path)
    if not path.is_file():
        raise EnsError(
            f"data file {str(path)!r} does not exist; pass the course's mars_for_students.npz "
            "with --data, or run `ens data demo` to generate the synthetic one"
        )
    headers = read_headers(path)
    if TRAIN_KEY not in headers:
        raise EnsError(
            f"{str(path)!r} has arrays {sorted(headers)} but no {TRAIN_KEY!r}; "
            f"expected {TRAIN_KEY!r} (N, 2, H, W) and {TEST_KEY!r} (M, H, W)"
        )
    train = headers[TRAIN_KEY]
    _check_numeric(train, path)
    if len(train.shape) != 4 or train.shape[1] != 2:
        raise EnsError(
            f"array {TRAIN_KEY!r} has shape {train.shape}; expected (N, 2, H, W) with "
            "[:, 0] the images and [:, 1] the masks"
        )
    height, width = train.shape[2], train.shape[3]
    n_test = 0
    for key in (TEST_KEY, TEST_MASKS_KEY):
        if key in headers:
            header = headers[key]
            _check_numeric(header, path)
            if len(header.shape) != 3 or header.shape[1:] != (height, width):
                raise EnsError(
                    f"array {key!r} has shape {header.shape}; expected (M, {height}, {width}) "
                    f"to match the images of {TRAIN_KEY!r}"
                )
            if key == TEST_KEY:
                n_test = header.shape[0]
    masks = headers.get(TEST_MASKS_KEY)
    if masks is not None and masks.shape[0] != n_test:
        raise EnsError(
            f"array {TEST_MASKS_KEY!r} has {masks.shape[0]} masks but {TEST_KEY!r} has "
            f"{n_test} images; they must match one to one"
        )
    return DataFile(path, train.shape[0], n_test, height, width, TEST_KEY in headers, masks is not None)


def _check_numeric(header: ArrayHeader, path: Path) -> None:
    if header.dtype.kind not in "iuf" or header.dtype.shape:
        raise EnsError(
            f"array {header.key!r} in {str(path)!r} has dtype {header.dtype}; "
            "expected a numeric dtype (uint8, int, float); booleans are not pixels or labels"
        )


def as_array(value, what: str, shape: str = " of shape (N, H, W)") -> np.ndarray:
    """`value` as a numpy array; a ragged nest of lists, or objects numpy cannot stack, are refused."""
    if isinstance(value, np.ndarray):
        return value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        raise EnsError(
            f"{what} {short_repr(value)} are not an array (ragged lists, or objects numpy cannot "
            f"stack); give a numpy array{shape}"
        ) from None


def as_pixels(array: np.ndarray, what: str = "images") -> np.ndarray:
    """An in-memory (N, H, W) array of integral 0..255 values as uint8, checked like the file's."""
    return _pixels(_check_stack(array, what), what, 0, "")


def as_labels(array: np.ndarray, what: str, n_classes: int) -> np.ndarray:
    """An in-memory (N, H, W) array of class indices 0..n_classes-1 as uint8, checked like the file's."""
    return _labels(_check_stack(array, what), what, 0, "", n_classes)


def _check_stack(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim != 3 or array.dtype.kind not in "iuf":
        raise EnsError(
            f"{what} are a {array.dtype} array of shape {array.shape}; expected a numeric (N, H, W) "
            "array (add a first axis for one image)"
        )
    return array


def _pixels(chunk: np.ndarray, key: str, start: int, part: str) -> np.ndarray:
    return _to_uint8(chunk, key, start, part, 255, "pixel values")


def _labels(chunk: np.ndarray, key: str, start: int, part: str, n_classes: int | None) -> np.ndarray:
    top = 255 if n_classes is None else n_classes - 1
    return _to_uint8(chunk, key, start, part, top, "labels")


def _to_uint8(chunk: np.ndarray, key: str, start: int, part: str, top: int, what: str) -> np.ndarray:
    """Validate integral values in 0..top and convert to uint8, naming the first bad value."""
    if chunk.dtype == np.uint8 and top == 255:
        return np.ascontiguousarray(chunk)
    if chunk.dtype.kind == "f":
        bad = ~np.isfinite(chunk)
        if bad.any():
            _raise_bad(chunk, bad, key, start, part, f"{what} must be finite")
        bad = chunk != np.round(chunk)
        if bad.any():
            _raise_bad(chunk, bad, key, start, part, f"{what} must be integral")
    bad = (chunk < 0) | (chunk > top)
    if bad.any():
        _raise_bad(chunk, bad, key, start, part, f"{what} must lie in 0..{top}")
    return chunk.astype(np.uint8)


def _raise_bad(chunk, bad, key, start, part, rule) -> None:
    index = np.unravel_index(int(np.argmax(bad)), bad.shape)
    value = chunk[index].item()
    image = start + int(index[0])
    hint = (
        "labels must be class indices; check the class count of your members"
        if "labels" in rule
        else "pixels must be raw 0..255 values, not rescaled"
    )
    raise EnsError(
        f"array {key!r}{part} ({chunk.dtype}): {rule}, found {value:g} in image {image} "
        f"at pixel {tuple(int(i) for i in index[1:])}; hint: {hint}"
    )
