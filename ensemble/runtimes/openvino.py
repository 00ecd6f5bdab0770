"""A member on OpenVINO's CPU plugin (the optional `ens[openvino]` extra, imported only when used).

The model is compiled for a static batch (the worker batch times the TTA views, at most `MAX_BATCH`
inputs: a larger call runs in chunks, a smaller one is zero-padded, which leaves the other images'
outputs unchanged since every image is convolved on its own) with the THROUGHPUT hint, one stream
per worker, streams not pinned to cores (the workers run other members beside it, and pinned streams
of two members could share a core; measured no slower) and float32 inference (its default on CPUs with
bf16 or AMX is bf16, up to 0.09 off). Each worker thread gets its own infer request.
"""

from __future__ import annotations

import functools
import threading
from importlib import metadata

import numpy as np

from ensemble.errors import EnsError, first_line
from ensemble.extras import optional_import
from ensemble.members.contract import INPUT_NAME
from ensemble.members.member import Member
from ensemble.members.session import SessionReport

OPENVINO = "OpenVINO"
INSTALL_HINT = "pip install 'ens[openvino]'"
# Each stream keeps every activation of a batch: 16 inputs of 64x128 held three members at 0.8 GB
# peak RSS against 1.5 GB at 64, at the same speed (benchmarks/README.md, "OpenVINO").
MAX_BATCH = 16
# How a member is compiled: part of the key of `auto`'s cached measurements.
OPENVINO_CONFIG = {
    "PERFORMANCE_HINT": "THROUGHPUT",
    "ENABLE_CPU_PINNING": False,
    "INFERENCE_PRECISION_HINT": "f32",
}


def openvino_version() -> str | None:
    """The installed openvino's version, or None when it is not installed (nothing is imported)."""
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def core():
    """OpenVINO's Core, created once per process; an EnsError with the install hint without it.

    Its bindings set up their numpy bridge on first use; two threads doing that at once can
    deadlock on the GIL, so it is done here, in one thread, before any worker runs a member.
    """
    openvino = optional_import(
        "openvino", needed_by="--runtime openvino", extra="openvino", instead="use --runtime ort"
    )
    _ = openvino.Tensor(np.zeros(1, np.float32)).data
    return openvino.Core()


class OpenVinoSession:
    """One member compiled for OpenVINO CPU at a static batch of `batch` inputs (at most
    `max_batch`); `run` as `MemberSession.run`. Image sizes are compiled on first use, one model each."""

    config = OPENVINO_CONFIG  # how members are compiled (a benchmark varies it in a subclass)

    def __init__(self, member: Member, batch: int, streams: int, max_batch: int = MAX_BATCH) -> None:
        self.member = member
        self.batch = max(1, min(batch, max_batch))
        self.streams = streams
        self.contract_checked = False
        self.report = SessionReport("cpu", (OPENVINO,), (OPENVINO,), None, streams)
        self._compiled: dict[tuple[int, ...], object] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        core()  # the install hint before any work

    def _compiled_model(self, shape: tuple[int, ...]):
        with self._lock:
            if shape not in self._compiled:
                config = {**self.config, "NUM_STREAMS": str(self.streams)}
                try:
                    model = core().read_model(str(self.member.path))
                    model.reshape({INPUT_NAME: [self.batch, *shape]})
                    self._compiled[shape] = core().compile_model(model, "CPU", config)
                except RuntimeError as exc:
                    raise EnsError(
                        f"OpenVINO cannot compile member {self.member.name!r} for input "
                        f"{(self.batch, *shape)} ({first_line(exc)}); use --runtime ort"
                    ) from exc
            return self._compiled[shape]

    def _request(self, shape: tuple[int, ...]):
        requests = self._local.__dict__.setdefault("requests", {})
        if shape not in requests:
            requests[shape] = self._compiled_model(shape).create_infer_request()
        return requests[shape]

    def run(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        request = self._request(tuple(pixels.shape[1:]))
        parts = []
        for start in range(0, len(pixels), self.batch):
            part = pixels[start : start + self.batch]
            count = len(part)
            if count < self.batch:
                part = np.concatenate([part, np.zeros((self.batch - count, *part.shape[1:]), np.float32)])
            request.infer({0: part})
            parts.append(np.array(request.get_output_tensor(0).data[:count]))  # the request reuses its buffer
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def openvino_available() -> bool:
    """True when openvino imports (its first import takes about a second, so only `auto` asks)."""
    try:
        core()
    except EnsError:
        return False
    return True
