"""Large float16 arrays written as memory-mapped .npy files under a temp name beside their target,
renamed into place by the caller only once complete (the probability cache, `--save-probs`)."""

from __future__ import annotations

import contextlib
import lzma
import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ensemble.errors import EnsError

# what numpy, zipfile and its decompressors raise on a damaged .npy/.npz file: numpy parses a header it
# cannot read as a literal again with `tokenize`, which has errors of its own
READ_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    TypeError,
    RuntimeError,
    NotImplementedError,
    MemoryError,
    SyntaxError,
    tokenize.TokenError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
)


def temp_memmap(target: Path, shape: tuple[int, ...], what: str, hint: str) -> tuple[np.memmap, Path]:
    """A float16 .npy memory map at `.NAME.PID.tmp` beside `target` (two processes never share one),
    and its path; EnsError naming `what` and `hint` when it cannot be created (nothing is left)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape), tmp
    except BaseException as exc:
        remove_quietly(tmp)
        if not isinstance(exc, OSError):
            raise
        raise EnsError(
            f"cannot write {what} in {str(target.parent)!r}: {exc.strerror or exc}; {hint}"
        ) from exc


def remove_quietly(*paths: Path) -> None:
    """Delete temp files that may or may not exist."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
