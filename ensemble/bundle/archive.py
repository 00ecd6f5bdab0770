"""A bundle as one .zip: files in sorted order with fixed timestamps, so equal bundles give equal bytes."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ensemble.files.atomic import atomic_files

EPOCH = (1980, 1, 1, 0, 0, 0)


def write_zip(folder: Path, archive: Path) -> Path:
    """Atomically write every file below `folder` into `archive`, paths relative to `folder`."""
    with atomic_files(archive) as (tmp,), zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, "rb") as source, out.open(info, "w") as dest:
                while block := source.read(1 << 20):
                    dest.write(block)
    return Path(archive)
