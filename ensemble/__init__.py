"""ens: fuse independently trained segmentation models into one scored Kaggle submission.

The Python API (a notebook's view of the `ens` commands, arrays in and out; see `ensemble.api`):

- `load_members`; `load_ensemble(..., runtime=, workers=, graph=)` -> an opaque handle: the members
  and the options `ens predict` would run with, checked the same way
- `predict(handle, images)` -> a `Prediction`: `.labels` uint8, `.probs` (fused probabilities) if asked
- `fit(members, images, masks)` -> the ensemble file's content; `score(labels, masks, C)` -> DataFrame
- `read_submission`, `write_submission` (`RleConvention` for other competitions' RLE),
  `remove_small_regions`; `EnsError` for every user mistake

Names load on first use, so `import ensemble` is instant and `ens` handles Ctrl-C before anything slow.
The subpackages are stacked in layers, lower ones never importing higher ones: docs/architecture.md.
"""

import importlib

_API = {
    "load_members": "ensemble.api",
    "load_ensemble": "ensemble.api",
    "predict": "ensemble.api",
    "fit": "ensemble.api",
    "score": "ensemble.api",
    "Prediction": "ensemble.api",
    "FitSettings": "ensemble.fitting.settings",
    "read_submission": "ensemble.submission.io",
    "write_submission": "ensemble.submission.io",
    "RleConvention": "ensemble.submission.convention",
    "remove_small_regions": "ensemble.inference.cleanup",
    "EnsError": "ensemble.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("ens")
        except PackageNotFoundError:  # running from a source tree that is not installed
            return "0.0.0+local"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
