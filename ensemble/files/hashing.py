"""Content hashes of files, read in blocks so memory stays flat whatever their size."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (what `sha256sum` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(files: Sequence[Path], root: Path) -> str:
    """One hex sha256 of several files: each one's path below `root` and content hash, in order.

    A single file gives its plain `file_sha256`, so hashes of one-file members stay `sha256sum`'s.
    """
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    base = Path(root).resolve()
    for path in files:
        name = Path(path).resolve().relative_to(base).as_posix()
        digest.update(f"{name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def path_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of every file below a folder (sorted, with their relative paths)."""
    path = Path(path)
    if path.is_dir():
        return files_sha256(sorted(p for p in path.rglob("*") if p.is_file()), path)
    return file_sha256(path)


def cached_file_sha256(path: str | os.PathLike) -> str:
    """`file_sha256`, remembered per (path, size, mtime): a large data file is read once per run."""
    stat = os.stat(path)
    return _cached_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def bytes_sha256(*parts: bytes | memoryview) -> str:
    """Hex sha256 of the concatenated `parts`, without joining them (slices of a large buffer)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def json_sha256(value: object) -> str:
    """Hex sha256 of the canonical JSON (sorted keys) of `value`: a key that names what decides a
    result (a run, a cache entry, a runtime measurement) and changes with any of it.

    >>> json_sha256({"b": 1, "a": [2]}) == json_sha256({"a": [2], "b": 1})
    True
    """
    return bytes_sha256(json.dumps(value, sort_keys=True).encode())
