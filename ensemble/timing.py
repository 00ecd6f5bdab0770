"""Per-stage wall-clock accounting for manifests and benchmarks."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator


class Timings:
    """Accumulate seconds per named stage: `with timings("fusion"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def add(self, other: Timings) -> None:
        """Add another accumulator's seconds (a worker's) stage by stage."""
        for stage, value in other.seconds.items():
            self.seconds[stage] += value

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {stage: round(value, digits) for stage, value in self.seconds.items()}
