"""Files ens keeps for itself (a run's shards and settings): read only while still a plain file of
their own (a symbolic link, a hard link shared with another file, a folder, a FIFO or a device in
their place is refused), and removed whatever they became. The type is checked with lstat before
opening, so a FIFO is never opened (reading one would block)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ensemble.errors import EnsError

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def not_plain(info: os.stat_result) -> str | None:
    """What a file with this lstat is when it is not a plain file of its own, else None."""
    for test, kind in _KINDS:
        if test(info.st_mode):
            return kind
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_nlink > 1:
        return "a hard link shared with another file"
    return None


@contextlib.contextmanager
def open_plain(path: str | os.PathLike, what: str = "file") -> Iterator[BinaryIO]:
    """`path` opened for reading; an EnsError naming it (as `what`) and saying why when it is
    missing, unreadable or not a plain file of its own."""
    path = Path(path)
    try:
        before = os.lstat(path)
        kind = not_plain(before)
        if kind is None:
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            handle = os.fdopen(os.open(path, flags), "rb")
    except OSError as exc:
        raise EnsError(f"{what} {str(path)!r} cannot be read ({exc.strerror or exc})") from exc
    if kind is not None:
        raise EnsError(f"{what} {str(path)!r} is {kind}, not a plain file")
    with handle:
        after = os.fstat(handle.fileno())
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise EnsError(f"{what} {str(path)!r} was replaced while being read")
        yield handle


def remove_entry(path: str | os.PathLike) -> None:
    """Remove whatever stands at `path` (a file, a link, a FIFO, a folder); nothing when absent."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise EnsError(f"cannot remove {str(path)!r} ({exc.strerror or exc}); remove it by hand") from exc
