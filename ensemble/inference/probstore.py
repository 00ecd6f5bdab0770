"""`--save-probs DIR`: fused probabilities kept as float16 for later analysis.

Written into a memory-mapped .npy batch by batch (memory stays bounded) under a temp name, and
renamed to `probs.npy` with `ids.npy` beside it only when the run succeeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np

from ensemble.errors import EnsError
from ensemble.files.atomic import ensure_dir, replace_all
from ensemble.files.npyfile import remove_quietly, temp_memmap

PROBS_FILE = "probs.npy"
IDS_FILE = "ids.npy"


def probs_files(directory: Path) -> list[Path]:
    """The files `--save-probs DIR` writes, for the up-front overwrite check."""
    return [Path(directory) / PROBS_FILE, Path(directory) / IDS_FILE]


class ProbsWriter:
    """Context manager collecting (N, C, H, W) float16 probabilities and their ids."""

    def __init__(self, directory: Path, n_images: int, n_classes: int, image_shape: tuple[int, int]) -> None:
        self.directory = Path(directory)
        self.shape = (n_images, n_classes, *image_shape)
        self._ids: list[np.ndarray] = []
        self._tmp: Path | None = None
        self._ids_tmp = self.directory / f".{IDS_FILE}.{os.getpid()}.tmp"
        self._array: np.memmap | None = None
        self._filled = 0

    def __enter__(self) -> ProbsWriter:
        ensure_dir(self.directory)
        target = self.directory / PROBS_FILE
        self._array, self._tmp = temp_memmap(
            target, self.shape, "probabilities", "choose a writable --save-probs folder"
        )
        return self

    def write(self, ids: np.ndarray, probs: np.ndarray) -> None:
        stop = self._filled + len(ids)
        self._array[self._filled : stop] = probs
        self._ids.append(np.asarray(ids))
        self._filled = stop

    @property
    def ids(self) -> np.ndarray:
        """The ids written so far: indices, or an image folder's stems."""
        return np.concatenate(self._ids) if self._ids else np.zeros(0, np.int64)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        array, self._array = self._array, None
        if array is not None:
            array.flush()
            del array
        try:
            if exc_type is None and self._filled == self.shape[0]:
                with open(self._ids_tmp, "wb") as handle:
                    np.save(handle, self.ids)
                files = probs_files(self.directory)
                replace_all([(self._tmp, files[0]), (self._ids_tmp, files[1])])
        finally:
            remove_quietly(*(tmp for tmp in (self._tmp, self._ids_tmp) if tmp is not None))


def load_probs(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read back (ids, probabilities) saved by `--save-probs`, memory-mapped."""
    directory = Path(directory)
    if not (directory / PROBS_FILE).is_file():
        raise EnsError(
            f"{str(directory)!r} holds no probs.npy; write one with `ens predict --save-probs DIR`"
        )
    return np.load(directory / IDS_FILE), np.load(directory / PROBS_FILE, mmap_mode="r")
