"""A source restricted to some of its shards: what a resumed run, or one Ray block, predicts.

Batches never cross a shard boundary and restart at each shard, so an image lands in the same
batch position whether its shard runs alone, after a resume, or in a full run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ensemble.data.sizes import SizeGroup
from ensemble.data.sources import FolderSource, Source
from ensemble.runs.plan import ShardPlan, source_order

Batch = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ShardView:
    """The images of `shards` (increasing indices) of `source` under `plan`; sizes and channels are
    the whole source's, so every check sees every image."""

    source: Source
    plan: ShardPlan
    shards: tuple[int, ...]

    @property
    def n_images(self) -> int:
        return self.plan.count(self.shards)

    @property
    def split(self) -> str:
        return self.source.split

    @property
    def groups(self) -> tuple[SizeGroup, ...]:
        return self.source.groups

    @property
    def image_shape(self) -> tuple[int, int] | None:
        return self.source.image_shape

    @property
    def channels(self) -> frozenset[int]:
        return self.source.channels

    def batches(self, batch_size: int, channels: int = 1) -> Iterator[Batch]:
        return shard_batches(self.source, self.plan, self.shards, batch_size, channels)


def shard_batches(
    source: Source, plan: ShardPlan, shards: Sequence[int], batch_size: int, channels: int = 1
) -> Iterator[Batch]:
    """(ids, uint8 images) batches of `shards` (increasing), in source order, reading only what
    they need: an image folder decodes only their files; the npz stops after the last one."""
    if isinstance(source, FolderSource):
        yield from _folder_batches(source, plan, shards, batch_size, channels)
    else:
        yield from _stream_batches(source, plan, shards, batch_size, channels)


def _folder_batches(
    source: FolderSource, plan: ShardPlan, shards: Sequence[int], batch_size: int, channels: int
) -> Iterator[Batch]:
    order = source.positions[source_order(source)]
    sizes = source.data.sizes
    for shard in shards:
        start, stop = plan.bounds(shard)
        positions = order[start:stop]
        # consecutive images of one size: a shard holds the tail of a size group and the head of the next
        cuts = np.flatnonzero(np.any(sizes[positions][1:] != sizes[positions][:-1], axis=1)) + 1
        for run in np.split(positions, cuts):
            for first, images in zip(
                range(0, len(run), batch_size),
                source.data.iter_images(run, channels, batch_size),
                strict=True,
            ):
                yield source.data.ids(run[first : first + len(images)]), images


def _stream_batches(
    source: Source, plan: ShardPlan, shards: Sequence[int], batch_size: int, channels: int
) -> Iterator[Batch]:
    """Re-cut the source's own batches (read in order) at shard boundaries, skipping other shards."""
    if not shards:
        return
    wanted = [plan.bounds(s) for s in shards]
    last = wanted[-1][1]
    pending: list[Batch] = []
    held = 0
    shard_at = 0
    position = 0
    for ids, images in source.batches(batch_size, channels):
        stop = position + len(ids)
        offset = position
        while offset < stop and shard_at < len(wanted):
            first, end = wanted[shard_at]
            if offset < first:
                offset = min(first, stop)
                continue
            take = min(end, stop, offset + batch_size - held)
            pending.append(
                (ids[offset - position : take - position], images[offset - position : take - position])
            )
            held += take - offset
            offset = take
            if held == batch_size or take == end:
                yield _join(pending)
                pending, held = [], 0
            if take == end:
                shard_at += 1
        position = stop
        if position >= last:
            return


def _join(pieces: list[Batch]) -> Batch:
    if len(pieces) == 1:
        return pieces[0]
    return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])
