"""The submission CSV assembled from a run's shards: the header, then each shard's rows in index
(source) order, streamed one shard at a time, every shard checked again as it is read; and with
`--save-probs` the probabilities kept in the shards, gathered into one array the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ensemble.errors import EnsError
from ensemble.inference.probstore import ProbsWriter
from ensemble.runs.shards import RunShards, Shard, read_shard


def assemble(target: Path, header: bytes, run_dir: Path, expected: RunShards) -> np.ndarray | None:
    """Write the CSV to `target` (a temp file committed by the caller); return the summed
    confusion matrix of a labelled split, else None."""
    total = None
    with open(target, "wb") as handle:
        handle.write(header)
        for shard in _shards(run_dir, expected):
            handle.write(shard.rows)
            if shard.confusion is not None:
                total = shard.confusion if total is None else total + shard.confusion
    return total


def assemble_probs(directory: Path, run_dir: Path, expected: RunShards) -> None:
    """Write the probabilities kept in the shards (`expected.probs`) to `probs.npy` and `ids.npy` in
    `directory`, each replaced only once all are written."""
    n_classes, *shape = expected.probs  # type: ignore[misc]
    with ProbsWriter(directory, len(expected.ids), n_classes, tuple(shape)) as writer:
        for shard in _shards(run_dir, expected):
            writer.write(shard.ids, shard.probs)


def _shards(run_dir: Path, expected: RunShards) -> Iterator[Shard]:
    """Each shard of the run in index order, checked as it is read."""
    for index in range(expected.plan.n_shards):
        try:
            yield read_shard(run_dir, index, expected)
        except EnsError as exc:
            raise EnsError(f"{exc}; rerun the same command to recompute it") from exc
