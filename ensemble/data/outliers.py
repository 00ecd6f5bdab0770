"""Outlier detection by duplicated masks: the course file holds 110 'alien' images sharing one mask."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ensemble.files.hashing import bytes_sha256

DEFAULT_MIN_COPIES = 5


@dataclass(frozen=True)
class DuplicateGroup:
    """Images whose masks are byte-identical."""

    indices: tuple[int, ...]
    mask_sha256: str


@dataclass(frozen=True)
class OutlierReport:
    """Groups of at least `min_copies` images sharing one mask; real labels never repeat that often."""

    groups: tuple[DuplicateGroup, ...]
    min_copies: int

    @property
    def indices(self) -> np.ndarray:
        """Sorted indices of every image in a duplicate group."""
        found = [i for group in self.groups for i in group.indices]
        return np.array(sorted(found), dtype=np.int64)

    def __len__(self) -> int:
        return sum(len(group.indices) for group in self.groups)


def find_duplicate_masks(masks: Iterable[np.ndarray], min_copies: int = DEFAULT_MIN_COPIES) -> OutlierReport:
    """Group masks ((N, H, W), or any iterable of (H, W) masks) by size and content and keep the
    groups with at least `min_copies` members.

    >>> masks = np.zeros((7, 2, 2), np.uint8); masks[:2] = 1
    >>> report = find_duplicate_masks(masks, min_copies=3)
    >>> report.indices.tolist()
    [2, 3, 4, 5, 6]
    """
    by_hash: dict[tuple[tuple[int, ...], str], list[int]] = defaultdict(list)
    for index, mask in enumerate(masks):
        digest = bytes_sha256(np.ascontiguousarray(mask).tobytes())
        by_hash[np.shape(mask), digest].append(index)
    groups = tuple(
        DuplicateGroup(tuple(indices), key[1])
        for key, indices in sorted(by_hash.items(), key=lambda item: -len(item[1]))
        if len(indices) >= min_copies
    )
    return OutlierReport(groups, min_copies)
