"""The run directory: `<cache>/runs/<key>/` holding `run.json` (the settings behind the key), the
shard files and, while a run is open, `run.lock`, which the running process holds (an exclusive
`flock`, its pid written inside) so two runs of the same settings never share the directory. It
is removed after the CSV is assembled, unless kept, and after a failure that left no shard."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ensemble.errors import EnsError
from ensemble.files.atomic import ensure_dir, write_text
from ensemble.files.cachedir import cache_root
from ensemble.files.plainfile import not_plain, open_plain, remove_entry

try:
    import fcntl
except ImportError:  # no flock on this platform: runs are not locked
    fcntl = None

_KEY_CHARS = 32
LOCK_NAME = "run.lock"
RECORD_NAME = "run.json"
_HINT = "set ENS_CACHE to a writable folder"


def run_dir(key: str, root: Path | None = None) -> Path:
    """The folder of the run with this key (its name, the key's first 32 hex digits, is the key
    each shard is bound to)."""
    return Path(root if root is not None else cache_root() / "runs") / key[:_KEY_CHARS]


@dataclass
class RunLock:
    """The open, locked `run.lock` of a run directory. Releasing removes the file, then closes it
    (a process that opened the file meanwhile sees it is gone once it gets the lock, and retries)."""

    fd: int | None
    path: Path | None = None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if _still_there(self.fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def lock_run_dir(directory: Path) -> RunLock:
    """Create the run directory and lock it for this process; an EnsError naming the process that
    holds it (a run of the same settings still running)."""
    for _ in range(20):
        _make_dir(directory)
        if fcntl is None:
            return RunLock(None)
        fd = _open_lock(directory / LOCK_NAME)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise EnsError(
                f"run directory {str(directory)!r} is in use by {holder}, a run with the same settings; "
                "wait for it to finish (or stop it), then rerun"
            ) from None
        except OSError:  # a file system without flock (some network mounts): the run goes unlocked
            pass
        if _still_there(fd, directory / LOCK_NAME):  # not removed by the run that held it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return RunLock(fd, directory / LOCK_NAME)
        os.close(fd)
    raise EnsError(f"cannot lock run directory {str(directory)!r}: it keeps being removed; rerun")


def _make_dir(directory: Path) -> None:
    """The run directory as a real folder: a link or a file in its place is removed first."""
    if os.path.islink(directory) or (os.path.lexists(directory) and not os.path.isdir(directory)):
        remove_entry(directory)
    ensure_dir(directory, _HINT)


def _open_lock(path: Path) -> int:
    if os.path.lexists(path) and not_plain(os.lstat(path)):
        remove_entry(path)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        raise EnsError(f"cannot create {str(path)!r} ({exc.strerror or exc}); {_HINT}") from exc


def lock_holder(directory: Path) -> str | None:
    """The process running in `directory` (it holds the lock), else None: probed with a shared
    lock held for an instant, without creating the lock file."""
    path = Path(directory) / LOCK_NAME
    if fcntl is None or not os.path.lexists(path) or not_plain(os.lstat(path)):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"process {text}" if text.isdigit() else "another process"


def _still_there(fd: int, path: Path) -> bool:
    try:
        now = os.lstat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def open_run_dir(directory: Path, fields: dict) -> list[str]:
    """Record the run's settings in the (locked) folder; a folder recorded under other settings (a
    shortened-key clash) or whose `run.json` is damaged is emptied first. Returns one warning per
    damaged record."""
    record = directory / RECORD_NAME
    text = json.dumps(fields, indent=2, sort_keys=True) + "\n"
    problems = []
    if os.path.lexists(record):
        try:
            current = _read_record(record, len(text.encode()) + 1)
        except EnsError as exc:
            current = None
            problems.append(f"{exc}; starting the run afresh")
        if current != text:
            clear_run_dir(directory)
    if not os.path.lexists(record):
        write_text(record, text)
    return problems


def _read_record(record: Path, at_most: int) -> str:
    """`run.json`'s text, read only as far as the settings it should hold (a huge file is not read)."""
    with open_plain(record, "run settings") as handle:
        try:
            return handle.read(at_most).decode("utf-8", errors="replace")
        except OSError as exc:
            raise EnsError(f"run settings {str(record)!r} cannot be read ({exc.strerror or exc})") from exc


def clear_run_dir(directory: Path) -> None:
    """Remove everything in the run directory but its lock."""
    with os.scandir(directory) as entries:
        names = [entry.name for entry in entries if entry.name != LOCK_NAME]
    for name in names:
        remove_entry(directory / name)


def has_shards(directory: Path) -> bool:
    return any(Path(directory).glob("shard-*.npz"))


def remove_run_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
