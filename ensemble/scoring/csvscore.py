"""Offline score of a submission CSV against labelled masks: the test masks of a synthetic file,
or the training masks of the ids listed (a validation-split CSV)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.datafile import open_data
from ensemble.data.folder import open_folder
from ensemble.data.metrics import confusion_matrix, get_metric, iou_per_class
from ensemble.data.sources import SPLITS
from ensemble.errors import EnsError
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.io import read_submission
from ensemble.submission.textids import ImageIndex


@dataclass(frozen=True)
class SubmissionScore:
    """The score of one CSV: the metric's mean, per-class IoU (NaN: class absent or not counted)
    and the true pixel count of every class."""

    submission: Path
    format: str
    split: str
    metric: str
    miou: float
    iou: tuple[float, ...]
    pixels: tuple[int, ...]
    n_images: int

    def to_json(self) -> dict:
        return {
            "miou": self.miou,
            "metric": self.metric,
            "per_class": {str(c): None if math.isnan(v) else v for c, v in enumerate(self.iou)},
            "n_images": self.n_images,
            "split": self.split,
            "format": self.format,
            "submission": str(self.submission),
        }


def score_submission(
    csv: str | os.PathLike,
    truth: str | os.PathLike,
    n_classes: int,
    split: str = "test",
    metric: str = "course",
    *,
    rle: RleConvention = DEFAULT_RLE,
) -> SubmissionScore:
    """Read `csv` (image shape from the truth file; an rle one under `rle`), look up its masks and
    score it. A folder of masks as `truth` pairs the CSV's ids with mask stems (and gives each
    image's size)."""
    reduction = get_metric(metric)
    if split not in SPLITS:
        raise EnsError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if Path(truth).is_dir():
        ids, fmt, matrix = _score_on_folder(csv, Path(truth), n_classes, rle)
    else:
        data = open_data(truth)
        ids, labels, fmt = read_submission(csv, data.image_shape, n_classes, rle=rle)
        if ids.dtype.kind == "U":
            raise EnsError(
                f"the ids of {str(csv)!r} are image names (e.g. {ids[0]!r}), but --truth {str(truth)!r} "
                "numbers its images; score a CSV of an image folder with --truth MASKS_DIR"
            )
        masks = truth_masks(data, ids, split, n_classes)
        matrix = confusion_matrix(masks, labels, n_classes)
    iou = iou_per_class(matrix, ignore_true=(0,))
    if metric != "course":
        iou[0] = np.nan
    return SubmissionScore(
        submission=Path(csv),
        format=fmt,
        split=split,
        metric=metric,
        miou=reduction.reduce(matrix),
        iou=tuple(float(v) for v in iou),
        pixels=tuple(int(v) for v in matrix.sum(axis=1)),
        n_images=len(ids),
    )


def _score_on_folder(
    csv, masks: Path, n_classes: int, rle: RleConvention
) -> tuple[np.ndarray, str, np.ndarray]:
    """The CSV's ids are mask stems; score each image against its mask, one size group at a time."""
    folder = open_folder(masks, masks)
    index = ImageIndex(folder.stems, folder.sizes)
    ids, labels, fmt = read_submission(csv, None, n_classes, images=index, complete=False, rle=rle)
    where = {stem: position for position, stem in enumerate(folder.stems)}
    positions = np.array([where[i] for i in ids.tolist()], np.int64)
    matrix = np.zeros((n_classes, n_classes), np.int64)
    for group in folder.groups(positions):
        chosen = np.searchsorted(positions, group.positions)
        found = np.stack([labels[k] for k in chosen.tolist()])
        matrix += confusion_matrix(folder.read_masks(group.positions, n_classes), found, n_classes)
    return ids, fmt, matrix


def truth_masks(data, ids: np.ndarray, split: str, n_classes: int) -> np.ndarray:
    """The masks of `ids`: test-set indices (every test image exactly once) or training indices."""
    if split == "test":
        masks = data.load_test_masks(n_classes)
        where = f"the {len(masks)} test images of {str(data.path)!r}"
        if len(ids) != len(masks):
            raise EnsError(
                f"submission has {len(ids)} images but there are {where}; score a full test "
                "submission, or a validation CSV with --split val"
            )
    else:
        _, masks = data.load_train(n_classes)
        where = f"the {len(masks)} training images of {str(data.path)!r}"
    outside = ids[ids >= len(masks)]
    if outside.size:
        raise EnsError(
            f"submission id {outside[0]} is not among {where} (ids 0..{len(masks) - 1}); "
            "check --truth and --split"
        )
    return masks[ids]
