"""Benchmark plumbing: subprocesses with their own peak RSS and CPU time, data slices, machine facts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Job:
    """One finished subprocess: wall seconds from spawn to exit, CPU seconds, its own peak RSS."""

    seconds: float
    cpu_seconds: float
    max_rss_mb: float


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_job(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Job:
    """Run `command` from `cwd` (the repository root), its output on our stderr; stop on a non-zero exit.

    `os.wait4` gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over all
    children so far); Linux reports ru_maxrss in KiB.
    """
    log(" ".join(command))
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=sys.stderr, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"benchmark step failed with exit code {process.returncode}: {' '.join(command)}")
    return Job(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def ens_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ensemble", *args]


def read_test_images(data: Path) -> np.ndarray:
    """All test images of a course-format npz as uint8 (N, H, W)."""
    from ensemble.data.datafile import open_data

    return open_data(data).load_test_images()


def slice_file(data: Path, images: np.ndarray, out: Path) -> Path:
    """A course-format npz with `images` as its test set and the first 8 training images of `data`."""
    from ensemble.data.datafile import open_data

    train, masks = open_data(data).load_train()
    np.savez(out, training_set=np.stack([train[:8], masks[:8]], axis=1), test_set=images)
    return out


def demo_file(n_test: int, out_dir: Path) -> Path:
    """`ens data demo` with `n_test` test images and 200 training images (kept for reruns)."""
    path = out_dir / f"demo_n{n_test}.npz"
    if not path.exists():
        run_job(ens_command("data", "demo", "--out", str(path), "--n-test", str(n_test), "--n-train", "200"))
    return path


def physical_cores() -> int:
    from ensemble.machine import physical_cores as cores

    return cores()


def machine() -> dict:
    """CPU model, core counts, versions and the load average when the benchmark started."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime-gpu") or _version("onnxruntime"),
        "openvino": _version("openvino"),
        "torch": _version("torch"),
        "keras": _version("keras"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
