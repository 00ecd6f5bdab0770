"""Where a run keeps its shards: `<cache>/runs/<key>/` ($ENS_CACHE, else .cache/ens), with `run.json`
recording the settings behind the key. Removed after the CSV is assembled, unless kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ensemble.files.atomic import ensure_dir, write_text
from ensemble.files.cachedir import cache_root

_KEY_CHARS = 32


def run_dir(key: str, root: Path | None = None) -> Path:
    """The folder of the run with this key."""
    return Path(root if root is not None else cache_root() / "runs") / key[:_KEY_CHARS]


def open_run_dir(directory: Path, fields: dict) -> Path:
    """Create the folder and record its settings; a folder recorded under other settings (a
    shortened-key clash) is emptied first."""
    record = directory / "run.json"
    text = json.dumps(fields, indent=2, sort_keys=True) + "\n"
    if record.exists() and record.read_text(encoding="utf-8", errors="replace") != text:
        remove_run_dir(directory)
    ensure_dir(directory, "set ENS_CACHE to a writable folder")
    if not record.exists():
        write_text(record, text)
    return directory


def remove_run_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
