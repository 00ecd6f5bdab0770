"""Shard files: the encoded CSV rows of consecutive images with their ids, written atomically, and
read back only when they still match what the run expects.

A shard is `shard-000007.npz` in the run directory: `ids`, `rows` (the CSV rows as bytes),
for a labelled split `confusion`, with `--save-probs` `probs` (the images' float16 fused
probabilities), and `sha256`, a hash of the run key with all of them, so a shard
edited (even with a recomputed checksum), copied or linked from another run does not match. The
run key is the run directory's name (`rundir.run_dir`). A missing shard is simply to do; a
truncated, corrupt, foreign or linked one, or one whose confusion matrix cannot be this shard's,
is reported and recomputed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.metrics import ConfusionAccumulator
from ensemble.errors import EnsError, first_line
from ensemble.files.atomic import atomic_write
from ensemble.files.npyfile import READ_ERRORS
from ensemble.files.plainfile import open_plain, remove_entry
from ensemble.runs.plan import ShardPlan
from ensemble.submission.io import SubmissionWriter


@dataclass(frozen=True)
class Shard:
    """One shard read back: its ids, CSV rows and (labelled split) confusion matrix."""

    index: int
    ids: np.ndarray
    rows: bytes
    confusion: np.ndarray | None
    probs: np.ndarray | None = None


@dataclass(frozen=True)
class RunShards:
    """What a run expects of its shards: the ids of each (`plan` over `ids`, in source order), on a
    labelled split a `n_classes` x `n_classes` confusion matrix counting every pixel of the shard's
    images (`pixels`: each image's pixel count, in source order) and, with `probs` (the (C, H, W)
    of one image), each image's float16 probabilities."""

    plan: ShardPlan
    ids: np.ndarray
    n_classes: int | None = None
    pixels: np.ndarray | None = None
    probs: tuple[int, int, int] | None = None

    @property
    def labelled(self) -> bool:
        return self.n_classes is not None

    def ids_of(self, index: int) -> np.ndarray:
        start, stop = self.plan.bounds(index)
        return self.ids[start:stop]

    def pixels_of(self, index: int) -> int:
        start, stop = self.plan.bounds(index)
        return int(self.pixels[start:stop].sum()) if self.pixels is not None else 0


def shard_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"shard-{index:06d}.npz"


def _digest(
    key: str, ids: np.ndarray, rows: bytes, confusion: np.ndarray | None, probs: np.ndarray | None = None
) -> str:
    """sha256 of the run key, the ids, the rows, the confusion matrix and the probabilities (when
    kept), each with its length."""
    digest = hashlib.sha256()
    parts = [
        f"ens shard\0{key}".encode(),
        "\n".join(str(i) for i in ids.tolist()).encode(),
        rows,
        b"" if confusion is None else f"{confusion.shape}".encode() + confusion.astype("<i8").tobytes(),
    ]
    if probs is not None:
        parts.append(f"{probs.shape}".encode() + np.ascontiguousarray(probs, "<f2").tobytes())
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def write_shard(
    run_dir: Path,
    index: int,
    ids: np.ndarray,
    rows: bytes,
    confusion: np.ndarray | None,
    probs: np.ndarray | None = None,
) -> None:
    """Commit one shard atomically: a stop signal mid-write leaves no file."""
    ids = np.asarray(ids)
    confusion = None if confusion is None else np.asarray(confusion, np.int64)
    probs = None if probs is None else np.asarray(probs, "<f2")
    arrays = {
        "ids": ids,
        "rows": np.frombuffer(rows, np.uint8),
        "sha256": np.array(_digest(Path(run_dir).name, ids, rows, confusion, probs)),
    }
    if confusion is not None:
        arrays["confusion"] = confusion
    if probs is not None:
        arrays["probs"] = probs
    with atomic_write(shard_path(run_dir, index)) as handle:
        np.savez(handle, **arrays)


def read_shard(run_dir: Path, index: int, expected: RunShards) -> Shard:
    """Shard `index` if it is a plain file of this run holding exactly its images, with intact rows
    and, on a labelled split, a confusion matrix that can be its own; EnsError naming what is wrong."""
    path = shard_path(run_dir, index)
    name = f"shard {str(path)!r}"
    try:
        with open_plain(path, "shard") as handle, np.load(handle, allow_pickle=False) as stored:
            ids, rows = stored["ids"], stored["rows"].tobytes()
            digest = str(stored["sha256"])
            confusion = stored["confusion"] if "confusion" in stored.files else None
            probs = stored["probs"] if "probs" in stored.files else None
    except READ_ERRORS as exc:
        raise EnsError(f"{name} cannot be read ({first_line(exc)})") from exc
    if ids.dtype.kind not in "iuU" or ids.ndim != 1:
        raise EnsError(f"{name} holds ids of shape {ids.shape} and type {ids.dtype}, not a list of ids")
    if confusion is not None and (confusion.dtype.kind not in "iu" or confusion.ndim != 2):
        raise EnsError(
            f"{name} holds a confusion matrix of shape {confusion.shape} and type {confusion.dtype}, "
            "not a C x C matrix of integer counts"
        )
    if probs is not None and probs.dtype != np.float16:
        raise EnsError(f"{name} holds probabilities of type {probs.dtype}, not float16")
    if digest != _digest(Path(run_dir).name, ids, rows, confusion, probs):
        raise EnsError(
            f"{name} is corrupt or belongs to another run (its checksum does not match this run's key, "
            "its ids, rows and confusion matrix)"
        )
    want = expected.ids_of(index)
    if ids.shape != want.shape or ids.tolist() != want.tolist():
        raise EnsError(f"{name} holds other images than this run's shard {index}")
    if expected.labelled != (confusion is not None):
        raise EnsError(f"{name} was written for another split")
    if confusion is not None:
        _check_confusion(name, confusion, expected.n_classes, expected.pixels_of(index))
    want_probs = None if expected.probs is None else (len(want), *expected.probs)
    if (None if probs is None else probs.shape) != want_probs:
        have = "no probabilities" if probs is None else f"probabilities of shape {probs.shape}"
        raise EnsError(f"{name} holds {have}, expected {want_probs or 'none'}")
    return Shard(index, ids, rows, confusion, probs)


def _check_confusion(name: str, confusion: np.ndarray, n_classes: int, pixels: int) -> None:
    """A shard's confusion matrix is C x C, counts >= 0, and counts every pixel of its images once."""
    if confusion.shape != (n_classes, n_classes):
        raise EnsError(
            f"{name} holds a {confusion.shape[0]}x{confusion.shape[1]} confusion matrix but this run "
            f"has {n_classes} classes"
        )
    if (confusion < 0).any():
        raise EnsError(f"{name} holds a negative count in its confusion matrix")
    counted = sum(int(count) for count in confusion.ravel().tolist())
    if counted != pixels:
        raise EnsError(f"{name}'s confusion matrix counts {counted} pixels but its images hold {pixels}")


def complete_shards(run_dir: Path, expected: RunShards) -> tuple[list[int], list[str]]:
    """(indices of the intact shards, one warning per damaged shard); damaged ones are removed so
    they are recomputed."""
    done, problems = [], []
    for index in range(expected.plan.n_shards):
        path = shard_path(run_dir, index)
        if not os.path.lexists(path):
            continue
        try:
            read_shard(run_dir, index, expected)
        except EnsError as exc:
            problems.append(f"{exc}; recomputing it")
            remove_entry(path)
            continue
        done.append(index)
    return done, problems


class ShardWriter:
    """Takes the (ids, labels[, probs]) batches of the shards `todo`, in order, and commits each shard
    as soon as its last image arrives; only one shard's rows (and probabilities) are held in memory.

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
        self._probs: list[np.ndarray] = []
        self._held = 0
        self._confusion = ConfusionAccumulator(self.encoder.n_classes) if self.truth is not None else None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None and len(self.written) != len(self.todo):
            missing = self.todo[len(self.written)]
            raise EnsError(f"the images of shard {missing} never arrived; the run is incomplete")
        self._reset()

    def write(self, ids, labels: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Add one batch (with its probabilities, kept as float16); it may end a shard or span several."""
        ids = np.asarray(ids)
        while len(ids):
            if len(self.written) == len(self.todo):
                raise EnsError(f"{len(ids)} more images arrived after the last shard of the run")
            start, stop = self.plan.bounds(self.todo[len(self.written)])
            take = min(len(ids), stop - start - self._held)
            self.add(ids[:take], labels[:take], None if probs is None else probs[:take])
            ids, labels = ids[take:], labels[take:]
            probs = None if probs is None else probs[take:]

    def add(self, ids: np.ndarray, labels: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Add images of the current shard; commit it when it is full."""
        index = self.todo[len(self.written)]
        start, stop = self.plan.bounds(index)
        self._rows.append(self.encoder.encode(ids, labels))
        self._ids.append(ids)
        if probs is not None:
            self._probs.append(np.asarray(probs, np.float16))
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
        probs = np.concatenate(self._probs) if self._probs else None
        write_shard(self.run_dir, index, expected, b"".join(self._rows), confusion, probs)
        self.written.append(index)
        self._reset()
        if self.on_shard:
            self.on_shard(index)
