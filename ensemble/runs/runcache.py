"""The run directories under the cache (`<cache>/runs/`): what each holds, and removing those no
run is using (a run in progress holds its directory's lock, so it is never removed under it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ensemble.errors import EnsError
from ensemble.files.cachedir import cache_root
from ensemble.files.plainfile import remove_entry
from ensemble.runs.rundir import RECORD_NAME, lock_holder, lock_run_dir, remove_run_dir


@dataclass(frozen=True)
class RunEntry:
    """One entry of the runs folder: its shard count, size in bytes, whether `run.json` is there,
    and the process using it (None when no run holds it)."""

    path: Path
    shards: int
    size: int
    recorded: bool
    in_use: str | None


def runs_root(root: Path | None = None) -> Path:
    return Path(root) if root is not None else cache_root() / "runs"


def list_runs(root: Path | None = None) -> list[RunEntry]:
    """Every run directory (and anything else) in the runs folder, by name."""
    folder = runs_root(root)
    if not folder.is_dir():
        return []
    return [_entry(path) for path in sorted(folder.iterdir())]


def clean_runs(root: Path | None = None) -> tuple[list[RunEntry], list[RunEntry]]:
    """Remove every run directory no run is using: (removed, kept because in use)."""
    removed, kept = [], []
    for entry in list_runs(root):
        if os.path.islink(entry.path) or not entry.path.is_dir():
            remove_entry(entry.path)
            removed.append(entry)
            continue
        try:
            lock = lock_run_dir(entry.path)
        except EnsError:
            kept.append(entry)
            continue
        try:
            remove_run_dir(entry.path)
        finally:
            lock.release()
        removed.append(entry)
    return removed, kept


def _entry(path: Path) -> RunEntry:
    if os.path.islink(path) or not path.is_dir():
        return RunEntry(path, 0, _size(path), False, None)
    files = [p for p in path.iterdir() if not p.is_symlink() and p.is_file()]
    shards = sum(1 for p in files if p.name.startswith("shard-") and p.suffix == ".npz")
    recorded = any(p.name == RECORD_NAME for p in files)
    return RunEntry(path, shards, sum(_size(p) for p in files), recorded, lock_holder(path))


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
