"""Summaries of a data file for `ens data inspect`: shapes, dtypes, class shares, outliers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.datasets import open_dataset
from ensemble.data.folder import FolderData, open_folder
from ensemble.data.npz import read_headers
from ensemble.data.outliers import find_duplicate_masks
from ensemble.data.sizes import describe_sizes


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
    outlier_examples: list
    share_title: str = "train share"
    example_kind: str = "indices"


def class_shares(masks: np.ndarray, n_classes: int) -> tuple[float, ...]:
    """Fraction of pixels per class."""
    counts = np.bincount(masks.ravel(), minlength=n_classes)[:n_classes]
    return tuple(float(c) / max(int(counts.sum()), 1) for c in counts)


def inspect_data(
    path: str | Path, n_classes: int | None = None, masks: str | Path | None = None
) -> DataReport:
    """Validate every array of the file (or every image and mask of a folder) and summarise it."""
    if Path(path).is_dir():
        return _inspect_folder(open_folder(path, masks), n_classes)
    data = open_dataset(path, masks)
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


def _inspect_folder(data: FolderData, n_classes: int | None) -> DataReport:
    """Decode every image (and mask) of a folder, batch by batch, and summarise it."""
    for group in data.groups():
        for _ in data.iter_images(group.positions, max(data.channel_counts), 256):
            pass
    kinds = {1: "grayscale", 3: "RGB"}
    lines = [
        f"images: {data.n_images} files in {str(data.path)!r}, sizes {describe_sizes(data.groups())}, "
        + " and ".join(f"{int((data.channels == c).sum())} {kinds[c]}" for c in sorted(data.channel_counts)),
    ]
    shares: tuple[float, ...] = ()
    outliers = find_duplicate_masks([])
    if data.has_masks:
        counts = np.zeros(256, np.int64)

        def counted():
            for batch in data.iter_masks(n_classes):
                for mask in batch:
                    counts[:] += np.bincount(mask.ravel(), minlength=256)
                    yield mask

        outliers = find_duplicate_masks(counted())
        lines.append(f"masks: {data.n_images} files in {str(data.masks_path)!r}, paired by stem")
        classes = n_classes or int(np.flatnonzero(counts).max(initial=0)) + 1
        shares = tuple(float(c) / max(int(counts.sum()), 1) for c in counts[:classes])
    examples = [data.stems[i] for i in outliers.indices[:5].tolist()]
    return DataReport(
        path=data.path,
        sha256=data.sha256,
        arrays=tuple(lines),
        train_shares=shares,
        test_shares=None,
        n_outliers=len(outliers),
        n_outlier_groups=len(outliers.groups),
        min_copies=outliers.min_copies,
        outlier_examples=examples,
        share_title="mask share",
        example_kind="images",
    )
