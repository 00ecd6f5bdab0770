"""Framework-free data preparation shared by both trainers: the course split, shuffled and flipped
batches, per-pixel class weights and the validation score."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.datafile import open_data
from ensemble.data.metrics import ConfusionAccumulator, course_miou
from ensemble.data.split import Split, SplitSpec, split_masks
from ensemble.errors import EnsError
from ensemble.inference.fusion import decode


@dataclass(frozen=True)
class TrainingData:
    """uint8 (N, H, W) images and masks of the train and validation parts of one split."""

    train_images: np.ndarray
    train_masks: np.ndarray
    val_images: np.ndarray
    val_masks: np.ndarray
    split: Split
    data_sha256: str

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.train_images.shape[1:]


def load_training_data(path: str | Path, spec: SplitSpec, n_classes: int, multiple: int = 1) -> TrainingData:
    """Read the labelled images and split them as `fit` and `score` do (outliers dropped if asked)."""
    data = open_data(path)
    if data.height % multiple or data.width % multiple:
        raise EnsError(
            f"images in {str(path)!r} are {data.height}x{data.width}, but this network needs sizes "
            f"divisible by {multiple}; use a smaller depth or pad the images"
        )
    images, masks = data.load_train(n_classes)
    split = split_masks(masks, spec)
    if len(split.train) == 0:
        raise EnsError(
            f"the split ({split.description}) leaves no training images out of {len(images)}; "
            "lower --val-fraction or list fewer --val-ids"
        )
    return TrainingData(
        images[split.train], masks[split.train], images[split.val], masks[split.val], split, data.sha256
    )


def iter_batches(
    images: np.ndarray, masks: np.ndarray, batch_size: int, rng: np.random.Generator, flip: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield shuffled (images, masks) batches; with `flip`, each pair is mirrored left-right with
    probability 1/2.

    >>> x = np.arange(8, dtype=np.uint8).reshape(2, 1, 4)
    >>> [b[0].shape for b in iter_batches(x, x, 1, np.random.default_rng(0))]
    [(1, 1, 4), (1, 1, 4)]
    """
    order = rng.permutation(len(images))
    for start in range(0, len(order), batch_size):
        index = np.sort(order[start : start + batch_size])
        x, y = images[index], masks[index]
        if flip:
            mirrored = rng.random(len(index)) < 0.5
            x[mirrored] = x[mirrored, :, ::-1]
            y[mirrored] = y[mirrored, :, ::-1]
        yield x, y


def n_batches(n_images: int, batch_size: int) -> int:
    return -(-n_images // batch_size)


def background_free_weights(n_classes: int) -> tuple[float, ...]:
    """Class weights that ignore class 0 (the course metric drops true-background pixels)."""
    return (0.0,) + (1.0,) * (n_classes - 1)


def pixel_weights(masks: np.ndarray, class_weights: tuple[float, ...]) -> np.ndarray:
    """Per-pixel float32 weights, scaled to mean 1 over the batch, so a plain mean of weighted
    per-pixel losses is the class-weighted mean; all zero when the batch has no weighted pixel.

    >>> pixel_weights(np.array([[0, 0, 1, 2]]), (0.0, 1.0, 1.0)).tolist()
    [[0.0, 0.0, 2.0, 2.0]]
    """
    weights = np.asarray(class_weights, np.float32)[masks]
    total = weights.sum(dtype=np.float64)
    return weights * np.float32(weights.size / total) if total > 0 else weights


def one_hot(masks: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 (..., C) one-hot labels, channels last."""
    return np.eye(n_classes, dtype=np.float32)[masks]


def validation_miou(
    scores: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    masks: np.ndarray,
    n_classes: int,
    batch_size: int,
) -> float | None:
    """Course mIoU of `scores` (uint8 images -> (B, C, H, W) logits or probabilities), decoded over
    classes 1..C-1 like `ens predict`; None without validation images."""
    if len(images) == 0:
        return None
    confusion = ConfusionAccumulator(n_classes)
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        confusion.update(masks[start:stop], decode(scores(images[start:stop])))
    return course_miou(confusion.matrix)
