"""The key of a run: a hash of every resolved setting that decides the CSV's bytes, so a changed
member, ensemble file, data file, split, TTA, fusion, decoding, cleanup, runtime of a member, format
or RLE convention never reuses a shard. Speed settings (batch size, device, threads, engine, workers,
pipeline or compiled graph: bitwise the same labels) are not in it."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

from ensemble.data.sources import FolderSource, Source
from ensemble.files.hashing import bytes_sha256, file_sha256, json_sha256
from ensemble.inference.scorer import Scorer
from ensemble.runs.plan import ShardPlan
from ensemble.submission.convention import RleConvention


def key_fields(
    ensemble: Scorer,
    source: Source,
    ids: np.ndarray,
    plan: ShardPlan,
    fmt: str,
    rle: RleConvention,
    ensemble_file: Path | None,
    *,
    probs: bool = False,
) -> dict:
    """What decides the shards' bytes, from resolved settings (never from the command's text); with
    `probs` the shards also keep the fused probabilities (`--save-probs`)."""
    described = ensemble.description
    options = described.options
    fields = {
        "ens": _version(),
        "members": [m.sha256 for m in described.members],
        "runtimes": [choice.kind for choice in ensemble.choices],  # other runtimes differ by ~1e-6
        "ensemble_file": None if ensemble_file is None else file_sha256(ensemble_file),
        "data": _data_sha256(source),
        "split": source.split,
        "ids": bytes_sha256("\n".join(str(i) for i in ids.tolist()).encode()),
        "tta": options.tta,
        "weights": [[float(w).hex() for w in row] for row in described.weights],
        "class_gain": [float(g).hex() for g in described.class_gain],
        "allow_background": bool(options.allow_background),
        "min_area": [int(a) for a in described.min_area],
        "connectivity": int(options.connectivity),
        "gray_to_rgb": bool(options.gray_to_rgb),
        "format": fmt,
        "rle": rle.to_json() if fmt == "rle" else None,
        "shard_size": plan.size,
    }
    if probs:
        fields["probs"] = "float16"
    return fields


def _data_sha256(source: Source) -> str:
    """The data's content hash: the npz file's sha256, or every image and mask file's content (an
    image folder's own `sha256` covers names, sizes and modification times only)."""
    if isinstance(source, FolderSource):
        return source.data.content_sha256()
    return source.data.sha256


def run_key(fields: dict) -> str:
    """Hex sha256 of the canonical JSON of `fields`."""
    return json_sha256(fields)


def _version() -> str:
    try:
        return metadata.version("ens")
    except metadata.PackageNotFoundError:
        return "unknown"
