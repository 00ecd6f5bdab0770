"""Image sources for prediction: the test set or the validation split of a course npz or an image folder.

Every source yields batches of images of one size (`groups`); the npz always has one size. Ids are
indices for the npz and file stems for a folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ensemble.data.datafile import DataFile
from ensemble.data.folder import FolderData
from ensemble.data.outliers import find_duplicate_masks
from ensemble.data.sizes import SizeGroup, size_groups
from ensemble.data.split import SplitSpec, split_masks
from ensemble.errors import EnsError

SPLITS = ("test", "val")


@dataclass(frozen=True)
class ImageSource:
    """Images of a course npz to predict, in increasing id order; `batches` yields (ids, uint8 (B, H, W))."""

    split: str
    n_images: int
    image_shape: tuple[int, int]
    data: DataFile
    val_ids: np.ndarray | None = None
    description: str = ""

    @property
    def groups(self) -> tuple[SizeGroup, ...]:
        return (SizeGroup(self.image_shape, np.arange(self.n_images)),)

    @property
    def channels(self) -> frozenset[int]:
        """Channel counts of the images: the course file is grayscale."""
        return frozenset({1})

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

    def truth_parts(self, n_classes: int | None = None) -> list[np.ndarray]:
        """The true masks of each size group."""
        return [self.truth(n_classes)]

    def truth_lookup(self, n_classes: int | None = None):
        """A function from a batch's ids to their true masks, for scoring while predicting."""
        if self.split == "test":
            masks = self.truth(n_classes)
            return lambda ids: masks[ids]
        _, masks = self.data.load_train(n_classes)
        return lambda ids: masks[ids]

    def group_batches(
        self, index: int, batch_size: int, channels: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of size group `index`: the npz has one, all of its images."""
        return self.batches(batch_size, channels)

    def batches(self, batch_size: int, channels: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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


@dataclass(frozen=True)
class FolderSource:
    """Images of a folder (all, or the validation split of a labelled one), batched by size;
    `batches` yields (stems, uint8 (B, H, W) or (B, H, W, 3))."""

    split: str
    data: FolderData
    positions: np.ndarray
    description: str = ""

    @property
    def n_images(self) -> int:
        return len(self.positions)

    @property
    def groups(self) -> tuple[SizeGroup, ...]:
        """Size groups with positions into this source's images (0..n_images-1)."""
        return size_groups(self.data.sizes[self.positions])

    @property
    def image_shape(self) -> tuple[int, int] | None:
        groups = self.groups
        return groups[0].shape if len(groups) == 1 else None

    @property
    def channels(self) -> frozenset[int]:
        return frozenset(int(c) for c in np.unique(self.data.channels[self.positions]))

    @property
    def val_ids(self) -> np.ndarray | None:
        return self.ids() if self.split == "val" else None

    def ids(self) -> np.ndarray:
        return self.data.ids(self.positions)

    def truth(self, n_classes: int | None = None) -> np.ndarray:
        parts = self.truth_parts(n_classes)
        if len(parts) != 1:
            raise EnsError(
                f"the images of {str(self.data.path)!r} have {len(parts)} sizes; their masks do not "
                "stack into one array"
            )
        return parts[0]

    def truth_parts(self, n_classes: int | None = None) -> list[np.ndarray]:
        return [self.data.read_masks(self.positions[g.positions], n_classes) for g in self.groups]

    def truth_lookup(self, n_classes: int | None = None):
        where = {stem: int(p) for stem, p in zip(self.ids().tolist(), self.positions, strict=True)}
        return lambda ids: self.data.read_masks([where[i] for i in np.asarray(ids).tolist()], n_classes)

    def batches(self, batch_size: int, channels: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of one size each, group after group; a grayscale image is replicated when
        `channels` is 3."""
        for index in range(len(self.groups)):
            yield from self.group_batches(index, batch_size, channels)

    def group_batches(
        self, index: int, batch_size: int, channels: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of size group `index`, in id order."""
        chosen = self.positions[self.groups[index].positions]
        images = self.data.iter_images(chosen, channels, batch_size)
        for start, batch in zip(range(0, len(chosen), batch_size), images, strict=True):
            yield self.data.ids(chosen[start : start + len(batch)]), batch


Source = ImageSource | FolderSource


def make_source(data: DataFile | FolderData, split: str = "test", spec: SplitSpec | None = None) -> Source:
    """The test images, or the validation images of `spec` (outliers found from the masks)."""
    if split not in SPLITS:
        raise EnsError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if isinstance(data, FolderData):
        return _folder_source(data, split, spec or SplitSpec())
    if split == "test":
        if not data.has_test:
            raise EnsError(f"{str(data.path)!r} has no 'test_set'; use --split val")
        if data.n_test == 0:
            raise EnsError(
                f"'test_set' of {str(data.path)!r} holds 0 images (shape (0, {data.height}, {data.width})); "
                "a submission needs at least one; use the full data file, or --split val"
            )
        return ImageSource("test", data.n_test, data.image_shape, data, description="test set")
    split_ids = validation_split(data, spec or SplitSpec())
    return ImageSource(
        "val", len(split_ids.val), data.image_shape, data, split_ids.val, split_ids.description
    )


def _folder_source(data: FolderData, split: str, spec: SplitSpec) -> FolderSource:
    if split == "test":
        return FolderSource("test", data, np.arange(data.n_images), f"{data.n_images} images of the folder")
    split_ids = validation_split(data, spec)
    return FolderSource("val", data, split_ids.val, split_ids.description)


def validation_split(data: DataFile | FolderData, spec: SplitSpec):
    """Resolve `spec` on the labelled images, dropping duplicated-mask outliers if asked."""
    if isinstance(data, FolderData):
        outliers = None
        if spec.drop_outliers:
            outliers = find_duplicate_masks(mask for batch in data.iter_masks() for mask in batch).indices
        split = spec.resolve(data.n_images, outliers, names=data.stems)
    else:
        if data.n_train == 0:
            raise EnsError(
                f"'training_set' of {str(data.path)!r} holds 0 images, so there is no validation split; "
                "use a data file with labelled images"
            )
        _, masks = data.load_train()
        split = split_masks(masks, spec)
    if len(split.val) == 0 and split.val_outliers:
        raise EnsError(
            f"the validation split is empty: its {split.val_outliers} image(s) are duplicated-mask outliers, "
            f"dropped ({split.description}); keep them with --keep-outliers"
        )
    if len(split.val) == 0:
        raise EnsError(f"the validation split is empty ({split.description}); raise --val-fraction")
    return split
