"""The JSON manifest written beside every submission: what produced it, with what, how fast."""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from ensemble.data.sources import ImageSource, Source
from ensemble.files.hashing import file_sha256
from ensemble.inference.loop import PredictResult
from ensemble.inference.scorer import Scorer
from ensemble.submission.convention import DEFAULT_RLE, RleConvention

_PACKAGES = ("ens", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "numba", "pandas")


def manifest_path(csv_path: Path) -> Path:
    """`submissions/x.csv` -> `submissions/x.manifest.json`."""
    return csv_path.with_name(csv_path.stem + ".manifest.json")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(
    ensemble: Scorer,
    source: Source,
    result: PredictResult,
    csv_path: Path,
    fmt: str,
    written: Path | None = None,
    rle: RleConvention = DEFAULT_RLE,
) -> dict:
    """Everything needed to reproduce and audit a submission.

    `written` is the file holding the CSV bytes when they are not at `csv_path` yet (its temp file
    before the CSV and the manifest are committed together); `rle` the convention of an rle CSV.
    """
    described = ensemble.description
    options = described.options
    names = [m.name for m in described.members]
    inference = result.timings.get("inference", 0.0) / ensemble.workers  # worker-seconds summed
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["ens", *sys.argv[1:]]),
        "submission": {
            "path": str(csv_path),
            "format": fmt,
            "rle": rle.to_json() if fmt == "rle" else None,
            "sha256": file_sha256(written or csv_path),
        },
        "data": {
            "path": str(source.data.path),
            "sha256": source.data.sha256,
            "split": source.split,
            "split_description": source.description,
            "n_images": source.n_images,
            "image_shape": None if source.image_shape is None else list(source.image_shape),
            **_folder_fields(source, options),
        },
        "members": [
            {
                "name": r.member.name,
                "path": str(r.member.path),
                "sha256": r.member.sha256,
                "source_framework": r.member.info.source_framework,
                "source_sha256": r.member.info.source_sha256,
                "parity_max_abs_err": r.member.info.parity_max_abs_err,
                "providers": list(r.report.used),
                "fallback": r.report.fallback,
                "runtime": choice.to_json(),
            }
            for r, choice in zip(ensemble.runners, ensemble.choices, strict=True)
        ],
        "classes": list(described.members[0].info.class_names),
        "weights": {
            name: [round(float(w), 6) for w in row]
            for name, row in zip(names, described.weights, strict=True)
        },
        "tta": options.tta,
        "decode": {
            "allow_background": options.allow_background,
            "class_gain": [round(float(g), 6) for g in described.class_gain],
        },
        "cleanup": {"min_area": described.min_area.tolist(), "connectivity": options.connectivity},
        "runtime": {
            "device": options.device,
            "threads": ensemble.threads,
            "batch_size": options.batch_size,
            "workers": ensemble.workers,
            "worker_batch": ensemble.worker_batch,
            "runtime": options.runtime,
        },
        "versions": package_versions(),
        "timings": {
            "total_seconds": round(result.seconds, 3),
            "images_per_second": round(result.n_images / max(result.seconds, 1e-9), 1),
            "outside_inference_share": round(1 - inference / max(result.seconds, 1e-9), 4),
            "stages": result.timings,
        },
    }


def _folder_fields(source: Source, options) -> dict:
    """What only image folders have: several sizes, RGB or grayscale images, and how they fed the members."""
    if isinstance(source, ImageSource):
        return {}
    return {
        "image_sizes": {f"{g.shape[0]}x{g.shape[1]}": len(g) for g in source.groups},
        "channels": sorted(source.channels),
        "gray_to_rgb": options.gray_to_rgb,
        "masks": None if source.data.masks_path is None else str(source.data.masks_path),
    }


def manifest_json(manifest: dict) -> str:
    """The manifest as written beside its CSV (committed together with it by `ens predict`)."""
    return json.dumps(manifest, indent=2) + "\n"
