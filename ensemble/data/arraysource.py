"""Images held in memory as one numpy array, as a source like those of the npz and the image folder:
the Python API predicts and fits through the same engine, runtime choice and probability cache as
the commands do on files.

>>> source = array_source(np.zeros((3, 4, 5), np.uint8))
>>> source.n_images, source.image_shape, [ids.tolist() for ids, _ in source.batches(2)]
(3, (4, 5), [[0, 1], [2]])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ensemble.data.sizes import SizeGroup
from ensemble.errors import EnsError
from ensemble.files.hashing import bytes_sha256, json_sha256


@dataclass(frozen=True)
class ArrayData:
    """What a source's `data` tells of the images behind it: the sha256 that names them (the
    probability cache keys its entries by it) and no file."""

    sha256: str
    path: None = None
    masks_path: None = None


@dataclass(frozen=True)
class ArraySource:
    """uint8 images (N, H, W) grayscale or (N, H, W, 3) RGB, with their uint8 (N, H, W) masks when
    labelled; ids are the positions 0..N-1."""

    images: np.ndarray
    data: ArrayData
    masks: np.ndarray | None = None
    split: str = "test"
    description: str = "arrays"

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    @property
    def groups(self) -> tuple[SizeGroup, ...]:
        return (SizeGroup(self.image_shape, np.arange(self.n_images)),)

    @property
    def channels(self) -> frozenset[int]:
        return frozenset({1 if self.images.ndim == 3 else 3})

    @property
    def val_ids(self) -> np.ndarray | None:
        return self.ids() if self.split == "val" else None

    def ids(self) -> np.ndarray:
        return np.arange(self.n_images, dtype=np.int64)

    def truth(self, n_classes: int | None = None) -> np.ndarray:
        if self.masks is None:
            raise EnsError("these images came without masks; pass masks to score or fit on them")
        return self.masks

    def truth_parts(self, n_classes: int | None = None) -> list[np.ndarray]:
        return [self.truth(n_classes)]

    def truth_lookup(self, n_classes: int | None = None):
        masks = self.truth(n_classes)
        return lambda ids: masks[ids]

    def batches(self, batch_size: int, channels: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, images) of `batch_size` images at a time, in order; the members' `to_pixels`
        replicates a gray channel for RGB members."""
        for start in range(0, self.n_images, batch_size):
            ids = np.arange(start, min(start + batch_size, self.n_images), dtype=np.int64)
            yield ids, self.images[start : start + len(ids)]

    def group_batches(
        self, index: int, batch_size: int, channels: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of size group `index`: an array has one, all of its images."""
        return self.batches(batch_size, channels)


def array_source(images: np.ndarray, masks: np.ndarray | None = None, split: str = "test") -> ArraySource:
    """A source of checked uint8 `images` (and `masks`), named by the sha256 of the images' shape
    and bytes."""
    header = json_sha256([str(images.dtype), list(images.shape)]).encode()
    digest = bytes_sha256(header, memoryview(np.ascontiguousarray(images).reshape(-1).view(np.uint8)))
    return ArraySource(images, ArrayData(digest), masks, split)
