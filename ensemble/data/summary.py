"""Summaries of a data file for `ens data inspect`: shapes, dtypes, class shares, outliers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.datafile import open_data
from ensemble.data.npz import read_headers
from ensemble.data.outliers import find_duplicate_masks


@dataclass(frozen=True)
class DataReport:
    path: Path
    sha256: str
    arrays: tuple[str, ...]
    train_shares: tuple[float, ...]
    test_shares: tuple[float, ...] | None
    n_outliers: int
    n_outlier_groups: int
    min_copies: int
    outlier_examples: list[int]


def class_shares(masks: np.ndarray, n_classes: int) -> tuple[float, ...]:
    """Fraction of pixels per class."""
    counts = np.bincount(masks.ravel(), minlength=n_classes)[:n_classes]
    return tuple(float(c) / max(int(counts.sum()), 1) for c in counts)


def inspect_data(path: str | Path, n_classes: int | None = None) -> DataReport:
    """Validate every array of the file and summarise it."""
    data = open_data(path)
    _, masks = data.load_train(n_classes)
    if data.has_test:
        for _ in data.iter_test_images(512):  # validates every test pixel
            pass
    test_masks = data.load_test_masks(n_classes) if data.has_test_masks else None
    classes = (
        n_classes
        or int(max(masks.max(initial=0), 0 if test_masks is None else test_masks.max(initial=0))) + 1
    )
    outliers = find_duplicate_masks(masks)
    arrays = tuple(f"{h.key}: shape {h.shape}, dtype {h.dtype}" for h in read_headers(data.path).values())
    return DataReport(
        path=data.path,
        sha256=data.sha256,
        arrays=arrays,
        train_shares=class_shares(masks, classes),
        test_shares=None if test_masks is None else class_shares(test_masks, classes),
        n_outliers=len(outliers),
        n_outlier_groups=len(outliers.groups),
        min_copies=outliers.min_copies,
        outlier_examples=outliers.indices[:5].tolist(),
    )
