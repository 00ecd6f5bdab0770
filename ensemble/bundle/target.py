"""The Python and platform a bundle is made for: pip's tags for it, and ens's requirements as that
target reads them, with ONNX Runtime chosen by the bundle's runtime (cpu or gpu)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ensemble.errors import EnsError

DEFAULT_PYTHON = "3.11"
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"
RUNTIMES = ("cpu", "gpu")
ORT_NAMES = ("onnxruntime", "onnxruntime-gpu")
RUNTIME_PACKAGE = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu[cuda,cudnn]"}
LEGACY = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
_PLATFORM = re.compile(r"^(?:manylinux_2_(\d+)|(manylinux2014|manylinux2010|manylinux1))_(x86_64|aarch64)$")


@dataclass(frozen=True)
class Target:
    """A bundle's target: Python version `3.N`, a manylinux platform tag, and the runtime."""

    python: str = DEFAULT_PYTHON
    platform: str = DEFAULT_PLATFORM
    runtime: str = "cpu"

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def describe(self) -> str:
        return f"Python {self.python} ({self.abi}), {self.platform}, {self.runtime} runtime"

    def as_dict(self) -> dict:
        return {
            "python": self.python,
            "platform": self.platform,
            "implementation": "cp",
            "abi": self.abi,
            "runtime": self.runtime,
        }


def make_target(python: str | None, platform: str | None, runtime: str | None) -> Target:
    """A checked Target; None takes the default (Kaggle's Python and a manylinux_2_28 platform)."""
    python = DEFAULT_PYTHON if python is None else python
    platform = DEFAULT_PLATFORM if platform is None else platform
    runtime = "cpu" if runtime is None else runtime
    if not re.fullmatch(r"3\.\d{1,2}", python) or int(python.split(".")[1]) < 10:
        raise EnsError(
            f"--python {python!r} is not a Python version ens runs on; give 3.N with N >= 10, e.g. 3.11"
        )
    if not _PLATFORM.match(platform):
        raise EnsError(
            f"--platform {platform!r} is not a manylinux platform tag; give manylinux_2_N_x86_64 (or "
            "_aarch64, or manylinux2014_x86_64), e.g. manylinux_2_28_x86_64 for Kaggle"
        )
    if runtime not in RUNTIMES:
        raise EnsError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    return Target(python, platform, runtime)


def platform_tags(platform: str) -> list[str]:
    """The tag and every older manylinux tag a machine of that tag also runs, newest first.

    pip takes a --platform literally, so a manylinux_2_28 target must list manylinux_2_17 too.

    >>> platform_tags("manylinux_2_19_x86_64")
    ['manylinux_2_19_x86_64', 'manylinux_2_18_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64', \
'manylinux_2_16_x86_64', 'manylinux_2_15_x86_64', 'manylinux_2_14_x86_64', 'manylinux_2_13_x86_64', \
'manylinux_2_12_x86_64', 'manylinux2010_x86_64', 'manylinux_2_11_x86_64', 'manylinux_2_10_x86_64', \
'manylinux_2_9_x86_64', 'manylinux_2_8_x86_64', 'manylinux_2_7_x86_64', 'manylinux_2_6_x86_64', \
'manylinux_2_5_x86_64', 'manylinux1_x86_64']
    """
    match = _PLATFORM.match(platform)
    if match is None:
        raise EnsError(f"--platform {platform!r} is not a manylinux platform tag")
    glibc = int(match.group(1)) if match.group(1) else LEGACY[match.group(2)]
    arch = match.group(3)
    tags = []
    for minor in range(glibc, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        tags += [f"{name}_{arch}" for name, legacy in LEGACY.items() if legacy == minor]
    return tags


def pip_target_args(target: Target) -> list[str]:
    """pip's options that resolve for `target` instead of the running Python (binary wheels only)."""
    args = ["--only-binary=:all:", "--python-version", target.python, "--implementation", "cp"]
    args += ["--abi", target.abi]
    for tag in platform_tags(target.platform):
        args += ["--platform", tag]
    return args


def marker_environment(target: Target) -> dict[str, str]:
    """The values of PEP 508 environment markers on the target machine."""
    machine = _PLATFORM.match(target.platform).group(3)
    return {
        "python_version": target.python,
        "python_full_version": f"{target.python}.0",
        "platform_system": "Linux",
        "platform_machine": machine,
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_python_implementation": "CPython",
        "implementation_name": "cpython",
        "extra": "",
    }


def requirements_for(requires_dist: list[str], target: Target) -> list[str]:
    """ens's dependencies on `target` (extras left out), with ONNX Runtime per the runtime:
    `onnxruntime` for cpu, `onnxruntime-gpu[cuda,cudnn]` (CUDA and cuDNN from PyPI) for gpu.

    >>> reqs = ["numpy>=1.26", "onnxruntime-gpu>=1.20; platform_system == 'Linux'",
    ...         "onnxruntime>=1.20; platform_system != 'Linux'", "torch; extra == 'torch'"]
    >>> requirements_for(reqs, Target(runtime="cpu"))
    ['numpy>=1.26', 'onnxruntime>=1.20']
    >>> requirements_for(reqs, Target(runtime="gpu"))
    ['numpy>=1.26', 'onnxruntime-gpu[cuda,cudnn]>=1.20']
    """
    from packaging.requirements import Requirement  # matplotlib's dependency, so always present

    env = marker_environment(target)
    out: list[str] = []
    ort_spec: str | None = None
    for line in requires_dist:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if req.name.lower() in ORT_NAMES:
            ort_spec = str(req.specifier)
            continue
        req.marker = None
        out.append(str(req))
    if ort_spec is None:
        raise EnsError(
            "the ens wheel declares no onnxruntime dependency for this target; rebuild it from a checkout"
        )
    return [*out, RUNTIME_PACKAGE[target.runtime] + ort_spec]
