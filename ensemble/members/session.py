"""The one place that builds ONNX Runtime sessions: device choice, providers, options, quiet logs.

`get_available_providers()` lists CUDA whenever the GPU build is installed, even with no GPU or
no CUDA libraries, so the providers a session really uses are read back after creation and a
fallback is reported in one line. ONNX Runtime's own loader messages are captured, not shown, and
its run-time error log is silenced: a failed run becomes one `EnsError` line (`ort_message`).
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ensemble.capture import quiet
from ensemble.errors import EnsError, shorten
from ensemble.files.cachedir import cache_root
from ensemble.machine import gpu_present, physical_cores, usable_cores
from ensemble.members.contract import INPUT_NAME, OUTPUT_NAME
from ensemble.members.member import Member

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# What ONNX Runtime raises: its own pybind error types, and ValueError/RuntimeError from its Python layer.
ORT_ERRORS: tuple[type[Exception], ...] = (
    *(
        error
        for error in vars(ort.capi.onnxruntime_pybind11_state).values()
        if isinstance(error, type) and issubclass(error, Exception)
    ),
    RuntimeError,
    ValueError,
)


class Device(str, Enum):
    """Where members run: `auto` takes CUDA when a GPU and its libraries are present."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"


@dataclass(frozen=True)
class SessionReport:
    """What was asked for and what ONNX Runtime actually loaded."""

    device: str
    requested: tuple[str, ...]
    used: tuple[str, ...]
    fallback: str | None
    threads: int
    threads_note: str | None = None

    @property
    def on_gpu(self) -> bool:
        return self.used[0] in (CUDA, TENSORRT)


def quiet_run_options() -> ort.RunOptions:
    """Run options that keep ONNX Runtime's own error log off the terminal (errors still raise)."""
    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


@dataclass
class MemberSession:
    """A member with its live session; `run` maps (B, 1, H, W) pixels to (B, C, H, W) probabilities.

    `contract_checked` turns true once an output of this session passed the run-time contract check.
    """

    member: Member
    session: ort.InferenceSession
    report: SessionReport
    contract_checked: bool = False
    run_options: ort.RunOptions = field(default_factory=quiet_run_options)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if not self.report.on_gpu:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: pixels}, self.run_options)[0]
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, pixels)
        binding.bind_output(OUTPUT_NAME, "cpu")
        self.session.run_with_iobinding(binding, self.run_options)
        return binding.copy_outputs_to_cpu()[0]


def ort_message(exc: BaseException, limit: int = 240) -> str:
    """ONNX Runtime's error as one readable line: no error-code prefix, source paths or C++
    signatures, shortened at a word boundary.

    >>> ort_message(RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while "
    ...     "running Add node. Name:'/up/Add' Status Message: /src/onnxruntime/core/ops.h:563 void "
    ...     "onnxruntime::Broadcast::Init(ptrdiff_t, ptrdiff_t) axis == 1 was false. 12 by 13"))
    "Add node '/up/Add': axis == 1 was false. 12 by 13"
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(
        r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: ",
        lambda m: f"{m[1]} node {m[2]!r}: " if m[2] else f"{m[1]} node: ",
        text,
    )
    text = re.sub(r"\S+\.(?:cc|h|cpp|cu):\d+ ", "", text)
    text = re.sub(r"(?:[\w:<>*&]+ )?onnxruntime::[\w:<>]+\([^)]*\)(?: const)? ", "", text)
    return shorten(text, limit)


def thread_count(threads: int | None) -> tuple[int, str | None]:
    """Intra-op threads for a request (None: the physical cores) and a note when it was capped.

    More threads than usable cores only slow ONNX Runtime down; tens of thousands hang or crash it.
    """
    if threads is None:
        return physical_cores(), None
    if threads < 1:
        raise EnsError(f"--threads {threads} must be at least 1; leave it out to use the physical cores")
    usable = usable_cores()
    if threads > usable:
        return usable, f"--threads {threads} capped to the {usable} cores available"
    return threads, None


def session_options(threads: int | None = None, cpu_only: bool = False) -> ort.SessionOptions:
    """ORT_ENABLE_ALL, `threads` intra-op threads (default: physical cores, capped to the usable
    cores), quiet logs.

    `cpu_only` sessions allocate from the process-wide arena (`share_cpu_arena`) and let idle
    worker threads sleep instead of spin, so they do not starve the pipeline's own numpy work or
    other processes of the cores between operators. They plan no memory pattern: a pattern is one
    block per session and input shape, kept in the arena, while workers running different members
    at once share freed blocks without it (peak RSS 50-180 MB lower at the same speed).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = thread_count(threads)[0]
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if cpu_only:
        share_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_mem_pattern = False
    return options


@functools.cache
def share_cpu_arena() -> None:
    """Register one CPU memory arena for every session of this process (once).

    Each session otherwise grows an arena of its own to its largest batch and keeps it; members
    run one after another, so one shared arena serves them all at a fraction of the peak memory.
    """
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))  # ORT's default arena


def requested_providers(device: Device | str) -> list:
    """Provider list for a device, best first; `auto` asks for CUDA only when a GPU is present."""
    device = Device(device)
    available = set(ort.get_available_providers())
    if device is Device.cpu or (device is Device.auto and not (gpu_present() and CUDA in available)):
        return [CPU]
    if device in (Device.cuda, Device.tensorrt) and CUDA not in available:
        raise EnsError(
            f"--device {device.value} needs onnxruntime-gpu, but the installed onnxruntime offers "
            f"{sorted(available)}; install onnxruntime-gpu or use --device cpu"
        )
    providers: list = [(CUDA, {"cudnn_conv_algo_search": "EXHAUSTIVE"}), CPU]
    if device is Device.tensorrt:
        engines = cache_root() / "tensorrt"
        engines.mkdir(parents=True, exist_ok=True)
        trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines)}
        providers.insert(0, (TENSORRT, trt))
    return providers


def build_session(
    member: Member, device: Device | str = Device.auto, threads: int | None = None, model: bytes | None = None
) -> MemberSession:
    """Create the ONNX Runtime session of one member and report the providers it really uses;
    `model` replaces the member's file with an equivalent graph of it (`runtimes.folding`)."""
    session, report = open_session(
        member.path if model is None else model,
        f"member {member.name!r}",
        "re-export it with `ens export`",
        device,
        threads,
    )
    return MemberSession(member, session, report)


def open_session(
    path: Path | bytes, what: str, hint: str, device: Device | str = Device.auto, threads: int | None = None
) -> tuple[ort.InferenceSession, SessionReport]:
    """An ONNX Runtime session of the model at `path` (a member, or the compiled ensemble graph; or
    the serialised model) and the providers it really uses; a model ORT cannot load is one error
    naming `what`, then `hint`."""
    device = Device(device)
    providers = requested_providers(device)
    names = tuple(p if isinstance(p, str) else p[0] for p in providers)
    options = session_options(threads, cpu_only=names == (CPU,))
    with quiet() as captured:
        if names[0] != CPU and hasattr(ort, "preload_dlls"):
            with contextlib.suppress(Exception):
                ort.preload_dlls()
        try:
            model = path if isinstance(path, bytes) else str(path)
            session = ort.InferenceSession(model, options, providers=providers)
        except ORT_ERRORS as exc:
            raise EnsError(f"ONNX Runtime cannot load {what} ({ort_message(exc)}); {hint}") from exc
    used = tuple(session.get_providers())
    fallback = None
    if used[0] != names[0]:
        fallback = (
            f"{_short(names[0])} requested but unavailable ({_reason(captured.text)}); "
            f"running on {_short(used[0])}"
        )
    note = thread_count(threads)[1]
    return session, SessionReport(device.value, names, used, fallback, options.intra_op_num_threads, note)


def _short(provider: str) -> str:
    return {CPU: "CPU", CUDA: "CUDA", TENSORRT: "TensorRT"}.get(provider, provider)


def _reason(log: str) -> str:
    """Condense ONNX Runtime's loader messages to the first missing library, if any."""
    missing = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", log)
    if missing:
        return f"{missing.group(1)} not found"
    return "its libraries did not load" if log.strip() else "not usable here"
