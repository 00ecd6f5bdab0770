"""Atomic file writes: a temp file beside the target, renamed into place only on success.

`atomic_write` commits one file; `atomic_files` commits several together (a CSV and its manifest),
after checking that every target can take its file, so a run never leaves one without the other.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ensemble.errors import EnsError


def check_target(path: str | os.PathLike) -> None:
    """Raise EnsError when `path` cannot take a file: it is a folder, or one of its parents is a file."""
    path = Path(path)
    if os.path.isdir(path):
        raise EnsError(f"cannot write {str(path)!r}: it is a folder; give a file path instead")
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise EnsError(
            f"cannot write {str(path)!r}: {str(blocker)!r} is a file, not a folder; choose another location"
        )


def ensure_dir(directory: str | os.PathLike, hint: str = "choose another location") -> Path:
    """Create `directory` and its parents; an EnsError names a file standing in the way, then `hint`."""
    directory = Path(directory) if str(directory) else Path(".")
    blocker = _file_in_the_way(directory)
    if blocker is not None:
        raise EnsError(
            f"cannot create folder {str(directory)!r}: {str(blocker)!r} is a file, not a folder; {hint}"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnsError(f"cannot create folder {str(directory)!r}: {exc.strerror or exc}; {hint}") from exc
    return directory


def _file_in_the_way(directory: Path) -> Path | None:
    """The nearest existing ancestor-or-self of `directory` when it is not a folder."""
    for candidate in (directory, *directory.parents):
        if os.path.exists(candidate):  # False, not an error, for names the file system refuses
            return None if os.path.isdir(candidate) else candidate
    return None


def _temp_beside(path: Path, temps: list[Path]) -> None:
    """Create an empty temp file in the folder of `path` (readable like a normal new file), listed in
    `temps` before it exists, so a stop signal at any instant leaves nothing that is not listed."""
    check_target(path)
    directory = ensure_dir(path.parent)
    while True:
        tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
        temps.append(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except FileExistsError:  # another file of that name: not ours, never removed
            temps.pop()
            continue
        except OSError as exc:
            temps.pop()
            raise EnsError(
                f"cannot write {str(path)!r}: {exc.strerror or exc}; choose a writable location"
            ) from exc
        os.close(fd)
        return


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a file handle whose content replaces `path` only if the block finishes.

    An exception (or Ctrl-C, or a stop signal) inside the block removes the temp file, so a reader
    never sees a half-written file and an older complete file is left untouched.
    """
    with atomic_files(path) as (tmp,), open(tmp, mode) as handle:
        yield handle


@contextlib.contextmanager
def atomic_files(*paths: str | os.PathLike) -> Iterator[tuple[Path, ...]]:
    """Yield one temp path per target; all are renamed into place together when the block succeeds.

    Before any rename, every target is checked (`check_target`); if one cannot take its file, or
    the block fails, no target is touched and every temp file is removed.
    """
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            _temp_beside(target, temps)
        yield tuple(temps)
        replace_all(zip(temps, targets, strict=True))
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def replace_all(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Flush each finished temp file to disk, check every target, then rename each temp onto it."""
    pairs = [(Path(tmp), Path(target)) for tmp, target in pairs]
    for tmp, _ in pairs:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for _, target in pairs:
        check_target(target)
    for tmp, target in pairs:
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise EnsError(
                f"cannot write {str(target)!r}: {exc.strerror or exc}; choose a writable location"
            ) from exc


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 `text` to `path`."""
    write_bytes(path, text.encode("utf-8"))
