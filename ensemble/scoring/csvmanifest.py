"""What a submission CSV's manifest (written beside it by `ens predict`) says, for commands that
read the CSV without being told: the class count (else an rle file's rows name the classes, as
every image gets a row for each class 1..C-1; else the course's count) and the image size.
A manifest is believed only while it describes the CSV's bytes (its sha256).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ensemble.course import N_CLASSES
from ensemble.files.hashing import file_sha256
from ensemble.files.jsonfile import JsonProblem, read_json_object
from ensemble.inference.manifest import manifest_path
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.formats import detect_format

MAX_CLASSES = 256
_CLASS = re.compile(rb"0|[1-9][0-9]{0,2}")


def csv_class_count(csv: str | os.PathLike, rle: RleConvention = DEFAULT_RLE) -> int:
    """The class count of the CSV at `csv` (an rle one read under `rle`): its manifest's, else the
    classes its rle rows name, else the course's."""
    path = Path(csv)
    if not path.is_file():
        return N_CLASSES
    found = _from_manifest(path)
    if found is None:
        found = _from_rows(path.read_bytes(), rle)
    return N_CLASSES if found is None else found


def csv_image_shape(csv: str | os.PathLike) -> tuple[int, int] | None:
    """The one image size (H, W) the CSV's manifest records, or None (no manifest, several sizes)."""
    manifest = read_manifest(Path(csv))
    try:
        height, width = manifest["data"]["image_shape"]
    except (TypeError, KeyError, ValueError):
        return None
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (height, width))
    return (height, width) if ok else None


def read_manifest(path: Path) -> dict | None:
    """The manifest beside the CSV at `path` if it describes these bytes, else None."""
    try:
        manifest = read_json_object(manifest_path(path))
        same_file = manifest["submission"]["sha256"] == file_sha256(path)
    except (JsonProblem, OSError, KeyError, TypeError):
        return None
    return manifest if same_file else None


def _from_manifest(path: Path) -> int | None:
    """The length of `classes` in the manifest beside the CSV."""
    manifest = read_manifest(path)
    classes = manifest.get("classes") if isinstance(manifest, dict) else None
    return len(classes) if isinstance(classes, list) and 2 <= len(classes) <= MAX_CLASSES else None


def _from_rows(data: bytes, rle: RleConvention) -> int | None:
    """One more than the largest class an rle file's rows name (at least 2; at least the course's
    count in the class-column layout, whose rows may leave empty classes out); None for flat files."""
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
    if top == 0 or top >= MAX_CLASSES:
        return None
    return max(top + 1, 2 if rle.layout == "per-class" else N_CLASSES)
