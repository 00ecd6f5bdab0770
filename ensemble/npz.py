"""Streaming reads of arrays inside an .npz file, chunk by chunk, without loading whole arrays.

The course file stores float64 arrays (about 1 GB); reading them in row chunks keeps memory
bounded by the chunk, whether the archive is stored or deflate-compressed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.errors import EnsError


@dataclass(frozen=True)
class ArrayHeader:
    """Shape and dtype of one array stored in an npz archive."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def _member(key: str) -> str:
    return f"{key}.npy"


def read_headers(path: Path) -> dict[str, ArrayHeader]:
    """Return the header of every array in the archive, keyed by array name."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise EnsError(
            f"{str(path)!r} is not a readable .npz archive ({exc}); "
            "expected a file written by numpy.savez / savez_compressed"
        ) from None
    headers: dict[str, ArrayHeader] = {}
    with archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as stream:
                headers[name[:-4]] = _read_header(stream, name[:-4], path)
    return headers


def _read_header(stream, key: str, path: Path) -> ArrayHeader:
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except ValueError as exc:
        raise EnsError(f"array {key!r} in {str(path)!r} has an unreadable header: {exc}") from None
    if dtype.hasobject:
        raise EnsError(
            f"array {key!r} in {str(path)!r} holds Python objects (dtype {dtype}); "
            "only numeric arrays are accepted"
        )
    return ArrayHeader(key, tuple(int(s) for s in shape), dtype, bool(fortran))


def iter_rows(path: Path, key: str, rows_per_chunk: int) -> Iterator[np.ndarray]:
    """Yield consecutive chunks of `rows_per_chunk` rows (first axis) of array `key`."""
    with zipfile.ZipFile(path) as archive, archive.open(_member(key)) as stream:
        header = _read_header(stream, key, path)
        if header.fortran_order:  # rare; cannot be streamed by rows
            array = np.load(path)[key]
            for start in range(0, len(array), rows_per_chunk):
                yield np.ascontiguousarray(array[start : start + rows_per_chunk])
            return
        row_shape = header.shape[1:]
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * header.dtype.itemsize
        remaining = header.shape[0] if header.shape else 0
        while remaining > 0:
            n = min(rows_per_chunk, remaining)
            buffer = _read_exact(stream, n * row_bytes, key, path)
            yield np.frombuffer(buffer, dtype=header.dtype).reshape((n, *row_shape))
            remaining -= n


def _read_exact(stream, size: int, key: str, path: Path) -> bytes:
    chunks = []
    while size > 0:
        chunk = stream.read(size)
        if not chunk:
            raise EnsError(f"array {key!r} in {str(path)!r} is truncated; re-download the file")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
