"""Image sources for prediction: the test set streamed from the npz, or the validation split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ensemble.data.datafile import DataFile
from ensemble.data.split import SplitSpec, split_masks
from ensemble.errors import EnsError

SPLITS = ("test", "val")


@dataclass(frozen=True)
class ImageSource:
    """Images to predict, in increasing id order; `batches` yields (ids, uint8 (B, H, W))."""

    split: str
    n_images: int
    image_shape: tuple[int, int]
    data: DataFile
    val_ids: np.ndarray | None = None
    description: str = ""

    def ids(self) -> np.ndarray:
        """Ids of the images in source order: test-set indices, or training-set indices for val."""
        if self.split == "test":
            return np.arange(self.n_images, dtype=np.int64)
        return np.asarray(self.val_ids, np.int64)

    def truth(self, n_classes: int | None = None) -> np.ndarray:
        """uint8 (N, H, W) true masks in source order: `test_masks`, or the training masks of val."""
        if self.split == "test":
            if not self.data.has_test_masks:
                raise EnsError(
                    f"{str(self.data.path)!r} has no 'test_masks' to score against; "
                    "use the validation split (--val) or a labelled test file"
                )
            return self.data.load_test_masks(n_classes)
        _, masks = self.data.load_train(n_classes)
        return masks[self.val_ids]

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.split == "test":
            start = 0
            for images in self.data.iter_test_images(batch_size):
                yield np.arange(start, start + len(images), dtype=np.int64), images
                start += len(images)
            return
        images, _ = self.data.load_train()
        for start in range(0, len(self.val_ids), batch_size):
            ids = self.val_ids[start : start + batch_size]
            yield ids, images[ids]


def make_source(data: DataFile, split: str = "test", spec: SplitSpec | None = None) -> ImageSource:
    """The test images, or the validation images of `spec` (outliers found from the masks)."""
    if split == "test":
        if not data.has_test:
            raise EnsError(f"{str(data.path)!r} has no 'test_set'; use --split val")
        if data.n_test == 0:
            raise EnsError(
                f"'test_set' of {str(data.path)!r} holds 0 images (shape (0, {data.height}, {data.width})); "
                "a submission needs at least one; use the full data file, or --split val"
            )
        return ImageSource("test", data.n_test, data.image_shape, data, description="test set")
    if split != "val":
        raise EnsError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    split_ids = validation_split(data, spec or SplitSpec())
    return ImageSource(
        "val", len(split_ids.val), data.image_shape, data, split_ids.val, split_ids.description
    )


def validation_split(data: DataFile, spec: SplitSpec):
    """Resolve `spec` on the file's labelled images, dropping duplicated-mask outliers if asked."""
    if data.n_train == 0:
        raise EnsError(
            f"'training_set' of {str(data.path)!r} holds 0 images, so there is no validation split; "
            "use a data file with labelled images"
        )
    _, masks = data.load_train()
    split = split_masks(masks, spec)
    if len(split.val) == 0:
        raise EnsError(f"the validation split is empty ({split.description}); raise --val-fraction")
    return split
