"""The runtimes a member can be asked to run on (`--runtime`) and the record of the one it runs on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

import onnxruntime as ort


class Runtime(str, Enum):
    """`--runtime`: `auto` measures once per machine and member, `ort` and `openvino` force one."""

    auto = "auto"
    ort = "ort"
    openvino = "openvino"


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime of one member and why: `how` is default, requested, measured or cached;
    `seconds` the median timed round of each candidate behind an `auto` choice; `folded` how many
    affine operations were folded into convolutions when ONNX Runtime runs the folded graph;
    `untimed` that `auto` had neither a cached choice nor enough images to time the candidates."""

    runtime: str
    version: str
    how: str
    parity_max_abs_err: float | None = None
    seconds: dict[str, float] | None = None
    note: str | None = None
    warning: str | None = None
    folded: int | None = None
    untimed: bool | None = None  # True: no cached choice and too few images to time the runtimes

    @property
    def kind(self) -> str:
        """What computed the member's output: the runtime, and whether its graph was folded."""
        return f"{self.runtime}+folded" if self.folded else self.runtime

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


def ort_choice(how: str, **fields) -> RuntimeChoice:
    return RuntimeChoice("onnxruntime", ort.__version__, how, **fields)
