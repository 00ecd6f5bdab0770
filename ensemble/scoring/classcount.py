"""The class count of a submission CSV when no --n-classes is given: the manifest `ens predict`
wrote beside it says it; else an rle file's rows name their classes (every image gets a row for
each class 1..C-1); else the course's count.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ensemble.course import N_CLASSES
from ensemble.files.hashing import file_sha256
from ensemble.inference.manifest import manifest_path
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.formats import detect_format

MAX_CLASSES = 256
_CLASS = re.compile(rb"0|[1-9][0-9]{0,2}")


def csv_class_count(csv: str | os.PathLike, rle: RleConvention = DEFAULT_RLE) -> tuple[int, str]:
    """(class count, where it came from) of the CSV at `csv`, an rle one read under `rle`."""
    path = Path(csv)
    if not path.is_file():
        return N_CLASSES, "the course's count"
    found = _from_manifest(path)
    if found is not None:
        return found, f"its manifest {manifest_path(path).name!r}"
    found = _from_rows(path.read_bytes(), rle)
    if found is not None:
        return found, "the classes its rows name"
    return N_CLASSES, "the course's count"


def _from_manifest(path: Path) -> int | None:
    """The length of `classes` in the manifest beside the CSV, if that manifest describes these bytes."""
    try:
        manifest = json.loads(manifest_path(path).read_text(encoding="utf-8"))
        classes = manifest["classes"]
        same_file = manifest["submission"]["sha256"] == file_sha256(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not same_file or not isinstance(classes, list) or not 2 <= len(classes) <= MAX_CLASSES:
        return None
    return len(classes)


def _from_rows(data: bytes, rle: RleConvention) -> int | None:
    """One more than the largest class an rle file's rows name (at least 2); None for flat files."""
    header, _, body = data.replace(b"\r\n", b"\n").partition(b"\n")
    fmt = detect_format(header, rle)
    if fmt is None or fmt.name != "rle":
        return None
    top = 0
    for line in body.split(b"\n"):
        fields = line.split(b",", 2)
        if rle.layout == "per-class":
            token = fields[0][fields[0].rfind(b"_") + 1 :]
        else:
            token = fields[1] if len(fields) > 1 else b""
        if _CLASS.fullmatch(token):
            top = max(top, int(token))
    return None if top == 0 or top >= MAX_CLASSES else max(top + 1, 2)
