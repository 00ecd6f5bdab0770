"""Where ens keeps what it can recompute (probabilities, TensorRT engines, the shards of runs):
$ENS_CACHE or .cache/ens."""

import os
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("ENS_CACHE", ".cache/ens"))


def cache_root() -> Path:
    """$ENS_CACHE as it is now (CACHE_ROOT is read once, at import), else .cache/ens."""
    return Path(os.environ.get("ENS_CACHE", ".cache/ens"))
