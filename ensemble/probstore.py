"""`--save-probs DIR`: fused probabilities kept as float16 for later analysis.

Written into a memory-mapped .npy batch by batch (memory stays bounded) under a temp name, and
renamed to `probs.npy` with `ids.npy` beside it only when the run succeeds.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

import numpy as np

from ensemble.atomic import atomic_write
from ensemble.errors import EnsError


class ProbsWriter:
    """Context manager collecting (N, C, H, W) float16 probabilities and their ids."""

    def __init__(self, directory: Path, n_images: int, n_classes: int, image_shape: tuple[int, int]) -> None:
        self.directory = Path(directory)
        self.shape = (n_images, n_classes, *image_shape)
        self.ids = np.zeros(n_images, np.int64)
        self._tmp = self.directory / ".probs.npy.tmp"
        self._array: np.memmap | None = None
        self._filled = 0

    def __enter__(self) -> ProbsWriter:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.float16, shape=self.shape)
        except OSError as exc:
            raise EnsError(
                f"cannot write probabilities to {str(self.directory)!r}: {exc.strerror or exc}; "
                "choose a writable --save-probs folder"
            ) from None
        return self

    def write(self, ids: np.ndarray, probs: np.ndarray) -> None:
        stop = self._filled + len(ids)
        self._array[self._filled : stop] = probs
        self.ids[self._filled : stop] = ids
        self._filled = stop

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        array, self._array = self._array, None
        if array is not None:
            array.flush()
            del array
        if exc_type is not None or self._filled != self.shape[0]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            return
        with atomic_write(self.directory / "ids.npy") as handle:
            np.save(handle, self.ids)
        os.replace(self._tmp, self.directory / "probs.npy")


def load_probs(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read back (ids, probabilities) saved by `--save-probs`, memory-mapped."""
    directory = Path(directory)
    if not (directory / "probs.npy").is_file():
        raise EnsError(
            f"{str(directory)!r} holds no probs.npy; write one with `ens predict --save-probs DIR`"
        )
    return np.load(directory / "ids.npy"), np.load(directory / "probs.npy", mmap_mode="r")
