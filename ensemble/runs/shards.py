"""Shard files: the encoded CSV rows of consecutive images with their ids, written atomically, and
read back only when they still match what the run expects.

A shard is `shard-000007.npz` in the run directory: `ids`, `rows` (the CSV rows as bytes),
`sha256` (of ids and rows together) and, for a labelled split, `confusion`. A missing shard is
simply to do; a truncated, corrupt or foreign one is reported and recomputed.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.errors import EnsError
from ensemble.files.atomic import atomic_write
from ensemble.runs.plan import ShardPlan
from ensemble.scoring.metrics import ConfusionAccumulator
from ensemble.submission.io import SubmissionWriter


@dataclass(frozen=True)
class Shard:
    """One shard read back: its ids, CSV rows and (labelled split) confusion matrix."""

    index: int
    ids: np.ndarray
    rows: bytes
    confusion: np.ndarray | None


def shard_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"shard-{index:06d}.npz"


def _digest(ids: np.ndarray, rows: bytes) -> str:
    digest = hashlib.sha256()
    digest.update("\n".join(str(i) for i in ids.tolist()).encode())
    digest.update(b"\0")
    digest.update(rows)
    return digest.hexdigest()


def write_shard(
    run_dir: Path, index: int, ids: np.ndarray, rows: bytes, confusion: np.ndarray | None
) -> None:
    """Commit one shard atomically: a stop signal mid-write leaves no file."""
    arrays = {
        "ids": np.asarray(ids),
        "rows": np.frombuffer(rows, np.uint8),
        "sha256": np.array(_digest(np.asarray(ids), rows)),
    }
    if confusion is not None:
        arrays["confusion"] = np.asarray(confusion, np.int64)
    with atomic_write(shard_path(run_dir, index)) as handle:
        np.savez(handle, **arrays)


def read_shard(run_dir: Path, index: int, expected_ids: np.ndarray, labelled: bool) -> Shard:
    """Shard `index` if it holds exactly `expected_ids` with intact rows; EnsError naming what is wrong."""
    path = shard_path(run_dir, index)
    try:
        with np.load(path, allow_pickle=False) as stored:
            ids, rows = stored["ids"], stored["rows"].tobytes()
            digest = str(stored["sha256"])
            confusion = stored["confusion"] if "confusion" in stored.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise EnsError(f"shard {str(path)!r} cannot be read ({exc})") from exc
    if digest != _digest(ids, rows):
        raise EnsError(f"shard {str(path)!r} is corrupt (its checksum does not match its rows)")
    if ids.shape != expected_ids.shape or ids.tolist() != expected_ids.tolist():
        raise EnsError(f"shard {str(path)!r} holds other images than this run's shard {index}")
    if labelled != (confusion is not None):
        raise EnsError(f"shard {str(path)!r} was written for another split")
    return Shard(index, ids, rows, confusion)


def complete_shards(
    run_dir: Path, plan: ShardPlan, ids: np.ndarray, labelled: bool
) -> tuple[list[int], list[str]]:
    """(indices of the intact shards, one warning per damaged shard); damaged ones are deleted so
    they are recomputed."""
    done, problems = [], []
    for index in range(plan.n_shards):
        if not shard_path(run_dir, index).exists():
            continue
        start, stop = plan.bounds(index)
        try:
            read_shard(run_dir, index, ids[start:stop], labelled)
        except EnsError as exc:
            problems.append(f"{exc}; recomputing it")
            os.unlink(shard_path(run_dir, index))
            continue
        done.append(index)
    return done, problems


class ShardWriter:
    """Takes the (ids, labels) batches of the shards `todo`, in order, and commits each shard as soon
    as its last image arrives; only one shard's rows are ever held in memory.

    `encoder` checks and encodes the rows (a SubmissionWriter used outside its `with` block);
    `truth` (ids -> true masks) adds each shard's confusion matrix.
    """

    def __init__(
        self,
        run_dir: Path,
        plan: ShardPlan,
        todo: Sequence[int],
        ids: np.ndarray,
        encoder: SubmissionWriter,
        truth: Callable[[np.ndarray], np.ndarray] | None = None,
        on_shard: Callable[[int], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.plan = plan
        self.todo = list(todo)
        self.ids = ids
        self.encoder = encoder
        self.truth = truth
        self.on_shard = on_shard
        self.written: list[int] = []
        self._reset()

    def _reset(self) -> None:
        self._rows: list[bytes] = []
        self._ids: list[np.ndarray] = []
        self._held = 0
        self._confusion = ConfusionAccumulator(self.encoder.n_classes) if self.truth is not None else None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None and len(self.written) != len(self.todo):
            missing = self.todo[len(self.written)]
            raise EnsError(f"the images of shard {missing} never arrived; the run is incomplete")
        self._reset()

    def write(self, ids, labels: np.ndarray) -> None:
        """Add one batch; it may end a shard or span several."""
        ids = np.asarray(ids)
        while len(ids):
            if len(self.written) == len(self.todo):
                raise EnsError(f"{len(ids)} more images arrived after the last shard of the run")
            start, stop = self.plan.bounds(self.todo[len(self.written)])
            take = min(len(ids), stop - start - self._held)
            self.add(ids[:take], labels[:take])
            ids, labels = ids[take:], labels[take:]

    def add(self, ids: np.ndarray, labels: np.ndarray) -> None:
        """Add images of the current shard; commit it when it is full."""
        index = self.todo[len(self.written)]
        start, stop = self.plan.bounds(index)
        self._rows.append(self.encoder.encode(ids, labels))
        self._ids.append(ids)
        if self._confusion is not None:
            self._confusion.update(self.truth(ids), labels)
        self._held += len(ids)
        if self._held == stop - start:
            self.commit(index, self.ids[start:stop])

    def commit(self, index: int, expected: np.ndarray) -> None:
        """Write the held rows as shard `index`, after checking they are its images in order."""
        got = np.concatenate(self._ids)
        if got.tolist() != expected.tolist():
            raise EnsError(
                f"shard {index} received images {got[:3].tolist()}... instead of {expected[:3].tolist()}..."
            )
        confusion = None if self._confusion is None else self._confusion.matrix
        write_shard(self.run_dir, index, expected, b"".join(self._rows), confusion)
        self.written.append(index)
        self._reset()
        if self.on_shard:
            self.on_shard(index)
