"""Which runtime runs each member: `--runtime ort`, `openvino`, or `auto` (measured once per machine).

`auto` times each member on ONNX Runtime and OpenVINO in the worker configuration (K threads on
the run's first batch, runtimes alternated round by round so load swings hit both), switches from
ONNX Runtime only for a clear margin, and caches the result under the cache dir, keyed by what the
speed depends on: the member's sha256, the CPU and its vector extensions, both runtimes' versions,
the batch shape, the workers and the TTA views. OpenVINO runs a member only when its output on the
first batch is within `PARITY_TOLERANCE` of ONNX Runtime's; otherwise the member stays on ONNX
Runtime with a one-line warning.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from ensemble.errors import EnsError
from ensemble.files.atomic import write_text
from ensemble.files.cachedir import cache_root
from ensemble.inference.runner import to_pixels
from ensemble.inference.tta import View, augment
from ensemble.machine import cpu_identity
from ensemble.members.member import Member
from ensemble.members.padding import pad, padded_size
from ensemble.members.session import CPU, ORT_ERRORS
from ensemble.runtimes.openvino import (
    INSTALL_HINT,
    MAX_BATCH,
    OPENVINO_CONFIG,
    OpenVinoSession,
    core,
    openvino_version,
)

if TYPE_CHECKING:
    from ensemble.data.sources import Source
    from ensemble.inference.pipeline import Ensemble
    from ensemble.runtimes.runner import Runner

PARITY_TOLERANCE = 1e-4
MARGIN = 1.05  # OpenVINO must be this much faster than ONNX Runtime to take a member over
MIN_IMAGES = 1024  # below this, timing the runtimes would cost a large share of the run
TIMED_ROUNDS = 5
RUNTIME_CACHE = "runtimes.json"  # under the cache dir


class Runtime(str, Enum):
    """`--runtime`: `auto` measures once per machine and member, `ort` and `openvino` force one."""

    auto = "auto"
    ort = "ort"
    openvino = "openvino"


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime of one member and why: `how` is default, requested, measured or cached;
    `seconds` the timed rounds (ONNX Runtime, OpenVINO) behind an `auto` choice."""

    runtime: str
    version: str
    how: str
    parity_max_abs_err: float | None = None
    seconds: tuple[float, float] | None = None
    note: str | None = None
    warning: str | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


def ort_choice(how: str, **fields) -> RuntimeChoice:
    return RuntimeChoice("onnxruntime", ort.__version__, how, **fields)


def choose_runtimes(
    ensemble: Ensemble,
    source: Source,
    runtime: Runtime | str = Runtime.auto,
    *,
    cache: Path | None = None,
    tolerance: float = PARITY_TOLERANCE,
    min_images: int = MIN_IMAGES,
) -> None:
    """Set each member's runner and choice on `ensemble` for `runtime` (see the module docstring);
    `cache` defaults to runtimes.json in the cache dir."""
    runtime = Runtime(runtime)
    cache = cache_root() / RUNTIME_CACHE if cache is None else cache
    count = len(ensemble.members)
    if runtime is Runtime.ort:
        ensemble.choices = [ort_choice("requested") for _ in range(count)]
        return
    if ensemble.engine != "pipeline":
        ensemble.choices = [ort_choice("default", note="the compiled graph runs on ONNX Runtime")] * count
        return
    used = ensemble.ort_runners[0].report.used[0]
    if used != CPU:
        if runtime is Runtime.openvino:
            raise EnsError(
                f"--runtime openvino runs members on the CPU, but they run on {used}; "
                "add --device cpu, or use --runtime auto"
            )
        ensemble.choices = [ort_choice("default", note="members run on a GPU") for _ in range(count)]
        return
    if runtime is Runtime.auto and not openvino_available():
        note = f"openvino is not installed ({INSTALL_HINT})"
        ensemble.choices = [ort_choice("default", note=note) for _ in range(count)]
        return
    ids, images = next(iter(source.batches(ensemble.worker_batch, ensemble.channels)))
    pixels = to_pixels(images, ensemble.channels)
    entries = read_cache(cache) if runtime is Runtime.auto else {}
    changed = False
    for index, member in enumerate(ensemble.members):
        batch = member_input(member, pixels, ensemble.views)
        static = (ensemble.worker_batch * len(ensemble.views), *batch.shape[1:])
        ort_runner = ensemble.ort_runners[index]
        try:
            openvino, seconds, how = None, None, "requested"
            if runtime is Runtime.auto:
                key = choice_key(member, static, ensemble.workers, ensemble.views)
                if key in entries:
                    how, seconds = "cached", tuple(entries[key]["seconds"])
                elif source.n_images < min_images:
                    note = f"{source.n_images} images are too few to time the runtimes (< {min_images})"
                    ensemble.choices[index] = ort_choice("default", note=note)
                    continue
                else:
                    openvino = OpenVinoSession(member, static[0], ensemble.workers)
                    seconds = time_runtimes((ort_runner, openvino), batch, ensemble.workers)
                    how, changed = "measured", True
                    entries[key] = {
                        "member": member.name,
                        "seconds": list(seconds),
                        "key": key_fields(member, static, ensemble.workers, ensemble.views),
                    }
                if seconds[0] < MARGIN * seconds[1]:
                    ensemble.choices[index] = ort_choice(how, seconds=seconds)
                    continue
            openvino = openvino or OpenVinoSession(member, static[0], ensemble.workers)
            error = parity_error(ort_runner, openvino, batch)
        except ORT_ERRORS as exc:
            reason = " ".join(str(exc).split())[:160]
            warning = (
                f"member {member.name!r} could not run on OpenVINO ({reason}); running it on ONNX Runtime"
            )
            ensemble.choices[index] = ort_choice(how, warning=warning)
            continue
        if not error <= tolerance:
            warning = (
                f"member {member.name!r}: OpenVINO differs from ONNX Runtime by {error:.2g} on the first "
                f"batch (tolerance {tolerance:g}); running it on ONNX Runtime"
            )
            ensemble.choices[index] = ort_choice(
                how, parity_max_abs_err=error, seconds=seconds, warning=warning
            )
            continue
        ensemble.runners[index] = openvino
        ensemble.choices[index] = RuntimeChoice("openvino", openvino_version() or "", how, error, seconds)
    if changed:
        write_cache(cache, entries)


def openvino_available() -> bool:
    """True when openvino imports (its first import takes about a second, so only `auto` asks)."""
    try:
        core()
    except EnsError:
        return False
    return True


def member_input(member: Member, pixels: np.ndarray, views: tuple[View, ...]) -> np.ndarray:
    """The batch `member` receives in the pipeline for `pixels`: TTA views stacked, padded to its size."""
    return pad(augment(pixels, views), padded_size(member, pixels.shape[2:]))


def parity_error(reference: Runner, other: Runner, batch: np.ndarray) -> float:
    """Largest absolute difference between two runners' outputs on `batch` (inf when not finite)."""
    diff = np.abs(reference.run(batch) - other.run(batch))
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def time_runtimes(runners: tuple[Runner, ...], batch: np.ndarray, workers: int) -> tuple[float, ...]:
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


def key_fields(member: Member, shape: tuple[int, ...], workers: int, views: tuple[View, ...]) -> dict:
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
    }


def choice_key(member: Member, shape: tuple[int, ...], workers: int, views: tuple[View, ...]) -> str:
    text = json.dumps(key_fields(member, shape, workers, views), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_cache(path: Path) -> dict:
    """The cached measurements (an unreadable cache counts as empty: it is only recomputed)."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_cache(path: Path, entries: dict) -> None:
    """Write the measurements atomically; a cache that cannot be written is only a lost speed-up."""
    try:
        write_text(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except (EnsError, OSError):
        return
