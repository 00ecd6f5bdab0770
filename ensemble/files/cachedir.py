"""Where ens keeps what it can recompute (probabilities, TensorRT engines): $ENS_CACHE or .cache/ens."""

import os
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("ENS_CACHE", ".cache/ens"))
