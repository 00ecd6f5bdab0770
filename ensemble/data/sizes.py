"""Images of mixed sizes, grouped: a batch holds images of one size, so members run on dense arrays.

A data set of one size is a single group; the course npz always is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SizeGroup:
    """The images of one size (H, W): their positions in source order, increasing."""

    shape: tuple[int, int]
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)


def size_groups(sizes: np.ndarray, positions: np.ndarray | None = None) -> tuple[SizeGroup, ...]:
    """Group the images at `positions` (all by default) of an (N, 2) array of sizes, the groups in
    order of their first image, positions increasing inside each.

    >>> [(g.shape, g.positions.tolist()) for g in size_groups(np.array([[2, 3], [4, 4], [2, 3]]))]
    [((2, 3), [0, 2]), ((4, 4), [1])]
    """
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    positions = np.arange(len(sizes)) if positions is None else np.asarray(positions, np.int64)
    if not len(positions):
        return ()
    chosen = sizes[positions]
    unique, first, inverse = np.unique(chosen, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    return tuple(
        SizeGroup((int(unique[g][0]), int(unique[g][1])), positions[inverse == g]) for g in np.argsort(first)
    )


def describe_sizes(groups: tuple[SizeGroup, ...]) -> str:
    """'64x128' for one size, '64x96 (120), 48x80 (80)' for several."""
    if len(groups) == 1:
        return f"{groups[0].shape[0]}x{groups[0].shape[1]}"
    return ", ".join(f"{g.shape[0]}x{g.shape[1]} ({len(g)})" for g in groups)
