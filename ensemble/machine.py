"""What this process may use of the machine: cores, physical memory, an NVIDIA GPU."""

from __future__ import annotations

import os
from pathlib import Path


def usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (hyper-threads share a core's FPUs)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        allowed = set(range(os.cpu_count() or 1))
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return max(1, len(allowed))
    cores, processor, package = set(), None, "0"
    for line in lines:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            processor = int(value)
        elif key == "physical id":
            package = value
        elif key == "core id" and processor in allowed:
            cores.add((package, value))
    return max(1, len(cores) or len(allowed))


def cpu_identity() -> str:
    """The CPU's model name and the vector extensions that change kernel choices (AVX2, AVX-512,
    AMX): what a speed measurement on this machine depends on."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and model == "unknown":
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
    isa = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile"))
    return " ".join([model, *isa])


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def gpu_present() -> bool:
    """True when an NVIDIA driver exposes at least one device."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()
