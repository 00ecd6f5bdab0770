"""What the pipeline needs of a member's runtime: the member, a session report, and a `run` that
maps (B, C_in, H, W) float32 pixels to (B, C, H, W) probabilities (ONNX Runtime's `MemberSession`
and `OpenVinoSession` both are one)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ensemble.members.member import Member
from ensemble.members.session import SessionReport


class Runner(Protocol):
    member: Member
    report: SessionReport
    contract_checked: bool

    def run(self, pixels: np.ndarray) -> np.ndarray: ...
