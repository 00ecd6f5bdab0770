"""How a run's images are cut into shards: fixed-size runs of consecutive images in source order.

Source order is the order in which a source yields its images (the npz in id order, an image
folder size group after size group), so shards concatenated in index order give today's CSV rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.data.sources import FolderSource, Source
from ensemble.errors import EnsError

DEFAULT_SHARD_SIZE = 1024


@dataclass(frozen=True)
class ShardPlan:
    """`n_images` in source order cut into shards of `size` images (the last may be shorter).

    >>> plan = ShardPlan(10, 4)
    >>> plan.n_shards, [plan.bounds(k) for k in range(plan.n_shards)]
    (3, [(0, 4), (4, 8), (8, 10)])
    """

    n_images: int
    size: int = DEFAULT_SHARD_SIZE

    def __post_init__(self) -> None:
        if self.size < 1:
            raise EnsError(
                f"--shard-size {self.size} must be >= 1 image; the default is {DEFAULT_SHARD_SIZE}"
            )

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.size)

    def bounds(self, index: int) -> tuple[int, int]:
        """[start, stop) of shard `index` in source order."""
        start = index * self.size
        return start, min(start + self.size, self.n_images)

    def count(self, indices) -> int:
        """Images in the shards `indices`."""
        return sum(stop - start for start, stop in map(self.bounds, indices))


def source_order(source: Source) -> np.ndarray:
    """Positions into `source.ids()` in the order `source.batches` yields the images."""
    if isinstance(source, FolderSource):
        groups = source.groups
        return np.concatenate([g.positions for g in groups]) if groups else np.empty(0, np.int64)
    return np.arange(source.n_images, dtype=np.int64)


def ordered_ids(source: Source) -> np.ndarray:
    """The ids of `source` in source order: the ids of shard k are `ordered_ids(source)[start:stop]`."""
    return source.ids()[source_order(source)]


def ordered_pixels(source: Source) -> np.ndarray:
    """Each image's pixel count (height x width), in source order: what a shard's confusion counts."""
    parts = [np.full(len(g.positions), g.shape[0] * g.shape[1], np.int64) for g in source.groups]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)
