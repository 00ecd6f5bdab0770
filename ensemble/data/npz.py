"""Streaming reads of arrays inside an .npz file, chunk by chunk, without loading whole arrays.

The course file stores float64 arrays (about 1 GB); reading them in row chunks keeps memory
bounded by the chunk, whether the archive is stored or deflate-compressed. Every header is checked
against the bytes the archive really holds before anything is allocated, and every way a zip can be
damaged (bad CRC, broken deflate, encryption, unknown compression) ends in one EnsError.
"""

from __future__ import annotations

import contextlib
import lzma
import math
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.errors import EnsError
from ensemble.machine import physical_memory

_VERSIONS = ((1, 0), (2, 0), (3, 0))
# what zipfile, zlib, bz2 and lzma raise on a damaged, encrypted or unsupported archive entry
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
)


@dataclass(frozen=True)
class ArrayHeader:
    """Shape and dtype of one array stored in an npz archive."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array, computed without overflow."""
        return math.prod(self.shape) * self.dtype.itemsize


def memory_budget() -> int:
    """Bytes one array may take in memory: the machine's physical memory."""
    memory = physical_memory()
    return 2**62 if memory is None else memory  # unknown: no budget beyond what numpy can get


def check_budget(nbytes: int, what: str, path: Path) -> None:
    """Refuse to allocate `nbytes` for `what` when it exceeds the memory budget."""
    budget = memory_budget()
    if nbytes > budget:
        raise EnsError(
            f"{what} of {str(path)!r} needs {nbytes / 2**30:,.1f} GiB, more than this machine's "
            f"{budget / 2**30:,.1f} GiB of memory; use a smaller file or split it"
        )


def _member(key: str) -> str:
    return f"{key}.npy"


@contextlib.contextmanager
def _damage(path: Path, key: str | None):
    """Turn the errors of a damaged archive into one EnsError naming the file and the array."""
    try:
        yield
    except (*_ZIP_ERRORS, KeyError) as exc:
        where = f"array {key!r} in {str(path)!r}" if key else f"{str(path)!r}"
        raise EnsError(
            f"cannot read {where}: {type(exc).__name__}: {exc}; the archive is damaged, encrypted or "
            "uses a compression numpy does not write; re-download it or save it again with "
            "numpy.savez / savez_compressed"
        ) from exc


def read_headers(path: Path) -> dict[str, ArrayHeader]:
    """Return the header of every array in the archive, keyed by array name."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (*_ZIP_ERRORS, KeyError) as exc:
        raise EnsError(
            f"{str(path)!r} is not a readable .npz archive ({exc}); "
            "expected a file written by numpy.savez / savez_compressed"
        ) from exc
    headers: dict[str, ArrayHeader] = {}
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            if key in headers:
                raise EnsError(
                    f"{str(path)!r} holds two arrays named {key!r}; a zip can repeat a name, but only one "
                    "of them would be read; save the data again with numpy.savez (one array per name)"
                )
            with _damage(path, key), archive.open(info) as stream:
                headers[key] = _read_header(stream, key, path, info.file_size)
    return headers


def _read_header(stream, key: str, path: Path, stored_size: int) -> ArrayHeader:
    """Parse the npy header and check that the entry holds exactly the bytes the header claims."""
    try:
        version = np.lib.format.read_magic(stream)
        if version not in _VERSIONS:
            raise ValueError(f"npy format version {version[0]}.{version[1]} is unknown")
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except (ValueError, TypeError, SyntaxError, KeyError, OverflowError, RecursionError) as exc:
        raise EnsError(f"array {key!r} in {str(path)!r} has an unreadable header: {exc}") from exc
    if dtype.hasobject:
        raise EnsError(
            f"array {key!r} in {str(path)!r} holds Python objects (dtype {dtype}); "
            "only numeric arrays are accepted"
        )
    if any(int(s) < 0 for s in shape):
        raise EnsError(f"array {key!r} in {str(path)!r} has a negative dimension in its shape {shape}")
    header = ArrayHeader(key, tuple(int(s) for s in shape), dtype, bool(fortran))
    held = stored_size - stream.tell()
    if header.nbytes != held:
        raise EnsError(
            f"array {key!r} in {str(path)!r} claims shape {header.shape} {dtype} ({header.nbytes:,} bytes) "
            f"but the archive holds {held:,} bytes of data for it; the file is damaged or was not "
            "written by numpy; re-download it or save it again with numpy.savez"
        )
    return header


def iter_rows(path: Path, key: str, rows_per_chunk: int) -> Iterator[np.ndarray]:
    """Yield consecutive chunks of `rows_per_chunk` rows (first axis) of array `key`."""
    path = Path(path)
    with _damage(path, key), zipfile.ZipFile(path) as archive:
        info = archive.getinfo(_member(key))
        with archive.open(info) as stream:
            header = _read_header(stream, key, path, info.file_size)
            if not header.shape:
                return
            row_shape = header.shape[1:]
            row_bytes = math.prod(row_shape) * header.dtype.itemsize
            if header.fortran_order:  # rare; cannot be streamed by rows
                check_budget(header.nbytes, f"array {key!r}", path)
                buffer = _read_exact(stream, header.nbytes, key, path)
                array = np.frombuffer(buffer, dtype=header.dtype).reshape(header.shape, order="F")
                for start in range(0, len(array), rows_per_chunk):
                    yield np.ascontiguousarray(array[start : start + rows_per_chunk])
                return
            rows_per_chunk = min(rows_per_chunk, header.shape[0]) or 1
            check_budget(rows_per_chunk * row_bytes, f"a chunk of {rows_per_chunk} rows of {key!r}", path)
            remaining = header.shape[0]
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
