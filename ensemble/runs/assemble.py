"""The submission CSV assembled from a run's shards: the header, then each shard's rows in index
(source) order, streamed one shard at a time, every shard checked again as it is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ensemble.errors import EnsError
from ensemble.runs.shards import RunShards, read_shard


def assemble(target: Path, header: bytes, run_dir: Path, expected: RunShards) -> np.ndarray | None:
    """Write the CSV to `target` (a temp file committed by the caller); return the summed
    confusion matrix of a labelled split, else None."""
    total = None
    with open(target, "wb") as handle:
        handle.write(header)
        for index in range(expected.plan.n_shards):
            try:
                shard = read_shard(run_dir, index, expected)
            except EnsError as exc:
                raise EnsError(f"{exc}; rerun the same command to recompute it") from exc
            handle.write(shard.rows)
            if shard.confusion is not None:
                total = shard.confusion if total is None else total + shard.confusion
    return total
