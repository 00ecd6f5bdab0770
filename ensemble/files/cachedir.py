"""Where ens keeps what it can recompute (probabilities, TensorRT engines, the shards of runs):
$ENS_CACHE or .cache/ens."""

import os
from pathlib import Path

DEFAULT_ROOT = ".cache/ens"


def cache_root() -> Path:
    """$ENS_CACHE as it is now, else .cache/ens: read at every call, so setting ENS_CACHE after
    import moves every cache alike."""
    return Path(os.environ.get("ENS_CACHE", DEFAULT_ROOT))


CACHE_LABEL = "--cache-dir"  # how errors name the cache folder: the option, its default, or $ENS_CACHE
