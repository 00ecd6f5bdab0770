"""Cached member probabilities on labelled images, so `ens fit` and `ens score` run each member once.

One float16 (N, C, H, W) .npy per member, TTA view and image size, named by a hash of everything that
decides it: the member file's sha256, the data's sha256, the image ids and the view. A changed member
or data file therefore misses the cache and is recomputed; stale entries are never read. Each entry's
sha256 is written beside it (`<entry>.json`) and checked on every read, so an entry that is damaged
or overwritten (truncated, another dtype or shape, NaN/inf, or other finite values of the right
shape) is recomputed with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ensemble.data.sources import ImageSource
from ensemble.data.tta import View
from ensemble.errors import first_line
from ensemble.files.atomic import ensure_dir, write_text
from ensemble.files.cachedir import cache_root
from ensemble.files.hashing import bytes_sha256, file_sha256, json_sha256
from ensemble.files.jsonfile import JsonProblem, read_json_object
from ensemble.files.npyfile import READ_ERRORS, remove_quietly, temp_memmap
from ensemble.inference.runner import checked_probs
from ensemble.members.channels import to_pixels
from ensemble.members.member import Member
from ensemble.members.session import MemberSession, build_session
from ensemble.timing import Timings

CACHE_FORMAT = "3"  # 2: every entry passed the run-time contract check; 3: its sha256 is kept beside it
SCAN_IMAGES = 256


def cache_key(member: Member, data_sha256: str, ids: np.ndarray, view: str) -> str:
    """Hex digest naming one cache entry; any change of member, data, images or view changes it."""
    if np.asarray(ids).dtype.kind in "iu":
        ids_digest = bytes_sha256(np.ascontiguousarray(ids, np.int64).tobytes())
    else:  # image folder stems
        ids_digest = bytes_sha256("\n".join(np.asarray(ids).tolist()).encode())
    return json_sha256([CACHE_FORMAT, member.sha256, data_sha256, ids_digest, view])[:32]


class ProbCache:
    """Per-view member probabilities of an image source, computed on a miss and memory-mapped on a hit;
    one entry per size group of the source (the course npz has one)."""

    def __init__(
        self,
        source: ImageSource,
        directory: Path | None = None,
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 64,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.directory = cache_root() if directory is None else Path(directory)
        self.device, self.threads, self.batch_size = device, threads, batch_size
        self.data_sha256 = source.data.sha256
        self.ids = source.ids()
        self.groups = source.groups
        self.computed: list[str] = []
        self.verified: dict[Path, tuple[int, ...]] = {}  # entries whose sha256 matched, by os.stat
        self.warn = warn or (lambda message: warnings.warn(message, stacklevel=3))

    def path(self, member: Member, view: View, group: int = 0) -> Path:
        ids = self.ids[self.groups[group].positions] if len(self.groups) > 1 else self.ids
        name = f"{member.name}-{view.name}-{cache_key(member, self.data_sha256, ids, view.name)}.npy"
        return self.directory / name

    def get(self, member: Member, view: View, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Read-only (N, C, H, W) float16 probabilities of `member` under `view`, in source order,
        for a source of one image size."""
        parts = self.get_parts(member, view, on_batch)
        if len(parts) != 1:
            raise ValueError("ProbCache.get needs a source of one image size; use get_parts")
        return parts[0]

    def get_parts(
        self, member: Member, view: View, on_batch: Callable[[int], None] | None = None
    ) -> list[np.ndarray]:
        """Read-only float16 probabilities of `member` under `view`, one (n, C, H, W) array per size
        group of the source."""
        return [self._get(member, view, group, on_batch) for group in range(len(self.groups))]

    def _get(self, member: Member, view: View, group: int, on_batch) -> np.ndarray:
        path = self.path(member, view, group)
        shape = (len(self.groups[group]), member.n_classes, *self.groups[group].shape)
        if path.is_file():  # content checked against its sha256 before numpy parses its header
            problem = self._hash_problem(path)
            array, problem = (None, problem) if problem else read_entry(path, shape)
            if problem is None:
                if on_batch is not None:
                    on_batch(shape[0])
                return array
            self.warn(f"probability cache entry {path} is damaged ({problem}); recomputing it")
        self._compute(member, view, path, group, shape, on_batch)
        self.computed.append(path.name)
        return np.load(path, mmap_mode="r")

    def _hash_problem(self, path: Path) -> str | None:
        """`hash_problem`, read once per run for an entry whose file is unchanged since (`score`
        reads each entry twice)."""
        try:
            stat = path.stat()
        except OSError as exc:
            return f"unreadable: {exc.strerror or exc}"
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if self.verified.get(path) == signature:
            return None
        problem = hash_problem(path)
        if problem is None:
            self.verified[path] = signature
        return problem

    def _compute(self, member: Member, view: View, path: Path, group: int, shape, on_batch) -> None:
        runner: MemberSession = build_session(member, self.device, self.threads)
        hint = f"pass --cache-dir a writable folder (default {str(cache_root())!r}, from ENS_CACHE if set)"
        ensure_dir(self.directory, hint)
        array, tmp = temp_memmap(path, shape, "the probability cache", hint)
        try:
            start = 0
            for ids, images in self.source.group_batches(group, self.batch_size, member.channels):
                probs = checked_probs(runner, ids, to_pixels(images, member.channels), (view,), Timings())
                array[start : start + len(ids)] = probs
                start += len(ids)
                if on_batch is not None:
                    on_batch(len(ids))
            array.flush()
            del array
            write_text(hash_path(path), json.dumps({"sha256": file_sha256(tmp)}) + "\n")
            os.replace(tmp, path)
        finally:
            remove_quietly(tmp)


def read_entry(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
    """Memory-map a cache entry and check it is float16 of `shape` with finite values.

    Returns (array, None), or (None, what is wrong). Finiteness is read from the float16 exponent
    bits, a chunked integer scan that costs a small share of reading the entry for fitting.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except READ_ERRORS as exc:
        return None, f"unreadable: {first_line(exc, 120)}"
    if not isinstance(array, np.ndarray):
        return None, "not a .npy array"
    if array.dtype != np.float16 or array.shape != shape:
        return None, f"{array.dtype} {array.shape}, expected float16 {shape}"
    bits = array.view(np.uint16)
    for start in range(0, len(bits), SCAN_IMAGES):
        if ((bits[start : start + SCAN_IMAGES] & 0x7C00) == 0x7C00).any():  # all-ones exponent: NaN/inf
            return None, "NaN/inf values"
    return array, None


def hash_path(entry: Path) -> Path:
    """Where the sha256 of a cache entry is kept: `<entry name>.json` beside it."""
    return Path(entry).with_suffix(".json")


def hash_problem(entry: Path) -> str | None:
    """What is wrong with a cache entry's content against the sha256 written beside it, or None."""
    try:
        recorded = read_json_object(hash_path(entry), max_bytes=4096).get("sha256")
    except JsonProblem as exc:
        return f"no valid sha256 beside it: {exc}"
    try:
        actual = file_sha256(entry)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if actual != recorded:
        return "its content differs from the sha256 written with it"
    return None


def merged_probs(cache: ProbCache, member: Member, views: tuple[View, ...], index=slice(None), on_batch=None):
    """float32 TTA mean of the cached views of `member` for images `index` (all by default)."""
    return view_mean([cache.get(member, view, on_batch)[index] for view in views])


def merged_parts(
    cache: ProbCache, member: Member, views: tuple[View, ...], on_batch=None
) -> list[np.ndarray]:
    """float32 TTA mean of the cached views of `member`, one array per size group."""
    parts = [cache.get_parts(member, view, on_batch) for view in views]
    return [view_mean([views_of[g] for views_of in parts]) for g in range(len(cache.groups))]


def view_mean(parts: list[np.ndarray]) -> np.ndarray:
    """float32 mean of per-view (already inverted) probabilities, accumulated in one new array."""
    total = np.array(parts[0], np.float32)
    for part in parts[1:]:
        total += part
    if len(parts) > 1:
        total *= np.float32(1.0 / len(parts))
    return total
