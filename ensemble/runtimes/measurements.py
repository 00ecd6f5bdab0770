"""What `--runtime auto` measures and keeps: each candidate's time on a member's pipeline batch,
its difference from ONNX Runtime, and the cache of measurements (`runtimes.json` in the cache dir),
keyed by everything the speed depends on."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from ensemble.data.tta import View, augment
from ensemble.errors import EnsError
from ensemble.files.atomic import write_text
from ensemble.files.hashing import json_sha256
from ensemble.files.jsonfile import JsonProblem, read_json_object
from ensemble.machine import cpu_identity
from ensemble.members.member import Member
from ensemble.members.padding import pad, padded_size
from ensemble.runtimes.openvino import MAX_BATCH, OPENVINO_CONFIG, openvino_version

if TYPE_CHECKING:
    from ensemble.runtimes.runner import Runner

TIMED_ROUNDS = 5


def member_input(member: Member, pixels: np.ndarray, views: tuple[View, ...]) -> np.ndarray:
    """The batch `member` receives in the pipeline for `pixels`: TTA views stacked, padded to its size."""
    return pad(augment(pixels, views), padded_size(member, pixels.shape[2:]))


def parity_error(reference: Runner, other: Runner, batch: np.ndarray) -> float:
    """Largest absolute difference between two runners' outputs on `batch` (inf when not finite)."""
    diff = np.abs(reference.run(batch) - other.run(batch))
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def time_runners(runners: tuple[Runner, ...], batch: np.ndarray, workers: int) -> tuple[float, ...]:
    """Median seconds each runner takes for a round of `workers` concurrent runs of `batch`, over
    `TIMED_ROUNDS` rounds after one warm-up round each; the order of the runners is reversed every
    other round, and the median ignores a round that a load spike hit."""
    with ThreadPoolExecutor(workers) as pool:

        def one_round(runner: Runner) -> float:
            start = time.perf_counter()
            list(pool.map(runner.run, [batch] * workers))
            return time.perf_counter() - start

        for runner in runners:
            one_round(runner)
        rounds: list[list[float]] = [[] for _ in runners]
        for round_index in range(TIMED_ROUNDS):
            order = range(len(runners)) if round_index % 2 == 0 else reversed(range(len(runners)))
            for index in order:
                rounds[index].append(one_round(runners[index]))
    return tuple(round(float(np.median(r)), 4) for r in rounds)


def key_fields(
    member: Member, shape: tuple[int, ...], workers: int, views: tuple[View, ...], candidates: list[str]
) -> dict:
    """What a runtime measurement depends on."""
    return {
        "member_sha256": member.sha256,
        "cpu": cpu_identity(),
        "onnxruntime": ort.__version__,
        "openvino": openvino_version(),
        "batch_shape": list(shape),
        "openvino_batch": min(shape[0], MAX_BATCH),
        "openvino_config": OPENVINO_CONFIG,
        "workers": workers,
        "views": [view.name for view in views],
        "candidates": candidates,
    }


def choice_key(fields: dict) -> str:
    return json_sha256(fields)


def cached_seconds(entry: object, names: list[str]) -> dict[str, float] | None:
    """The median seconds a cache entry holds for exactly the candidates `names`; None when the
    entry is missing or not such (a damaged or hand-edited cache is measured again, not trusted)."""
    seconds = entry.get("seconds") if isinstance(entry, dict) else None
    if not isinstance(seconds, dict) or sorted(seconds) != sorted(names):
        return None
    valid = all(
        isinstance(s, int | float) and not isinstance(s, bool) and 0 < s < float("inf")
        for s in seconds.values()
    )
    return {name: float(seconds[name]) for name in names} if valid else None


def read_cache(path: Path) -> dict:
    """The cached measurements; a cache that is missing or not a JSON object as `files.jsonfile`
    reads one (bounded size and nesting, finite numbers) counts as empty: it is only measured again."""
    try:
        return read_json_object(path)
    except JsonProblem:
        return {}


def write_cache(path: Path, entries: dict) -> None:
    """Write the measurements atomically; a cache that cannot be written is only a lost speed-up."""
    try:
        write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except (EnsError, OSError):
        return
